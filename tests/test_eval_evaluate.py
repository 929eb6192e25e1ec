"""End-to-end protocol evaluation on generated trees with a deterministic fake embedder."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from raytrain_vireid.errors import UserError
from raytrain_vireid.eval import protocols
from raytrain_vireid.eval.evaluate import evaluate, evaluate_pairs
from raytrain_vireid.eval.metrics import eval_regdb, eval_sysu


def make_sysu(root, ids=(1, 2, 3, 4), per_folder=3):
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, ids)) + "\n")
    for pid in ids:
        for cam in (1, 2, 3, 4, 5, 6):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"{i + 1:04d}.jpg").write_bytes(b"")


class FakeEmbed:
    """Identity direction plus a path-seeded perturbation; records every table it is given."""

    def __init__(self, noise=0.8):
        self.noise = noise
        self.calls = []

    def __call__(self, table):
        self.calls.append(table)
        pids = np.asarray(table["pid"].to_pylist())
        feats = np.zeros((len(pids), 8), np.float32)
        feats[np.arange(len(pids)), pids % 8] = 1.0
        for row, path in enumerate(table["path"].to_pylist()):
            feats[row] += self.noise * np.random.default_rng(zlib.crc32(path.encode())).standard_normal(8)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def test_sysu_embeds_each_image_once_and_matches_manual_scoring(tmp_path):
    make_sysu(tmp_path)
    embed = FakeEmbed()
    result = evaluate("sysu", str(tmp_path), embed, trials=(0, 1, 2))
    assert len(embed.calls) == 1
    paths = embed.calls[0]["path"].to_pylist()
    assert len(paths) == len(set(paths))
    expected_paths = set(protocols.sysu_query(str(tmp_path))["path"].to_pylist())
    for mode in ("all", "indoor"):
        for t in (0, 1, 2):
            expected_paths |= set(protocols.sysu_gallery(str(tmp_path), mode, t)["path"].to_pylist())
    assert set(paths) == expected_paths

    one_by_one = FakeEmbed()
    for mode in ("all", "indoor"):
        q = protocols.sysu_query(str(tmp_path), mode)
        scores = []
        for t in (0, 1, 2):
            g = protocols.sysu_gallery(str(tmp_path), mode, t)
            qf, gf = one_by_one(q).astype(np.float64), one_by_one(g).astype(np.float64)
            scores.append(eval_sysu(-np.matmul(qf, gf.T), q["pid"].to_numpy(), g["pid"].to_numpy(),
                                    q["camid"].to_numpy(), g["camid"].to_numpy(), 20))
            trial = result.settings[mode].trials[t]
            np.testing.assert_array_equal(trial.cmc, scores[-1][0])
            assert trial.mAP == scores[-1][1] and trial.mINP == scores[-1][2]
        mean = result.settings[mode].mean
        assert mean.mAP == (scores[0][1] + scores[1][1] + scores[2][1]) / 3
        np.testing.assert_array_equal(mean.cmc, (scores[0][0] + scores[1][0] + scores[2][0]) / 3)
    assert result.headline_name == "all/mAP" and result.headline == result.settings["all"].mean.mAP


def test_as_rows(tmp_path):
    make_sysu(tmp_path, ids=(1, 2))
    result = evaluate("sysu", str(tmp_path), FakeEmbed(), trials=(0, 1), modes=("indoor",), max_rank=5)
    rows = result.as_rows(per_trial=True)
    assert [(r["setting"], r["trial"]) for r in rows] == [("indoor", "mean"), ("indoor", 0), ("indoor", 1)]
    assert set(rows[0]) == {"protocol", "setting", "trial", "r1", "r5", "r10", "r20", "mAP", "mINP"}
    assert rows[0]["r5"] == float(result.settings["indoor"].mean.cmc[4]) and np.isnan(rows[0]["r10"])
    assert result.headline_name == "indoor/mAP"


def test_regdb_both_directions(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "test_visible_1.txt").write_text("V/a.bmp 1\nV/b.bmp 2\nV/c.bmp 3\n")
    (tmp_path / "idx" / "test_thermal_1.txt").write_text("T/a.bmp 1\nT/b.bmp 2\nT/c.bmp 3\n")
    embed = FakeEmbed(noise=0.0)  # exact identity features: perfect retrieval
    result = evaluate("regdb", str(tmp_path), embed)
    assert list(result.settings) == ["v2t", "t2v"]
    for setting in result.settings.values():
        assert setting.mean.mAP == 1.0 and setting.mean.mINP == 1.0 and setting.mean.cmc[0] == 1.0
    assert embed.calls[0].num_rows == 6


def test_evaluate_pairs_is_standard_cmc_without_removal():
    q = np.eye(3)[[0, 1]]
    g = np.eye(3)[[1, 0, 0, 2]]
    result = evaluate_pairs(q, g, np.array([5, 6]), np.array([6, 5, 5, 7]), max_rank=4)
    cmc, m_ap, m_inp = eval_regdb(-q @ g.T, np.array([5, 6]), np.array([6, 5, 5, 7]), 4)
    assert result.headline_name == "t2v/mAP" and result.headline == m_ap == 1.0
    np.testing.assert_array_equal(result.settings["t2v"].mean.cmc, cmc)


def test_bad_protocol_and_mode(tmp_path):
    with pytest.raises(UserError, match="protocol: 'market'"):
        evaluate("market", str(tmp_path), FakeEmbed())
    with pytest.raises(UserError, match="modes: 'v2t' is not one of all, indoor for sysu"):
        evaluate("sysu", str(tmp_path), FakeEmbed(), modes=("v2t",))
    with pytest.raises(UserError, match="shots: multi-shot galleries exist only for sysu"):
        evaluate("regdb", str(tmp_path), FakeEmbed(), shots=10)


def test_llcm_directions_and_trials(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "test_id.txt").write_text("1,2\n")
    for pid in (1, 2):
        for base, cams in (("test_vis", (1, 3)), ("test_nir", (1, 2))):
            for cam in cams:
                folder = tmp_path / base / f"cam{cam}" / f"{pid:04d}"
                folder.mkdir(parents=True)
                for i in range(3):
                    (folder / f"{pid:04d}_c{cam:02d}_{i}.jpg").write_bytes(b"")
    embed = FakeEmbed(noise=0.0)
    result = evaluate("llcm", str(tmp_path), embed, trials=(0, 1))
    assert list(result.settings) == ["v2t", "t2v"] and list(result.settings["t2v"].trials) == [0, 1]
    assert result.settings["v2t"].mean.mAP == 1.0 and result.headline_name == "v2t/mAP"
    assert embed.calls[0].num_rows == 24  # every image of both modalities at most once
