"""Run a test protocol end to end on NumPy features: build the sets, embed each image once, score every trial.

``embed(table)`` is supplied by the caller (the training side wraps the model); everything here is
NumPy/pyarrow. Distances are ``-q @ g.T`` in float64, as the field's test scripts do on their
float64 feature arrays. Averages over trials are a running sum divided by the trial count, in
trial order (the reference scripts' arithmetic), so reported digits match them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raytrain_vireid.errors import UserError
from raytrain_vireid.eval import protocols
from raytrain_vireid.eval.metrics import eval_llcm, eval_regdb, eval_sysu

RANKS = (1, 5, 10, 20)
METRICS = tuple(f"r{k}" for k in RANKS) + ("mAP", "mINP")

Embed = Callable[[pa.Table], np.ndarray]


@dataclass(frozen=True)
class Score:
    """Scores of one setting (SYSU mode or direction): one trial, or the mean over trials."""

    cmc: np.ndarray
    mAP: float
    mINP: float

    def rank(self, k: int) -> float:
        """Rank-k accuracy as a fraction (NaN beyond the curve's ``max_rank``)."""
        return float(self.cmc[k - 1]) if 1 <= k <= len(self.cmc) else float("nan")

    def metrics(self) -> dict[str, float]:
        """``r1, r5, r10, r20, mAP, mINP`` as fractions, in ``METRICS`` order."""
        return dict(zip(METRICS, [self.rank(k) for k in RANKS] + [float(self.mAP), float(self.mINP)]))


@dataclass(frozen=True)
class SettingResult:
    """Mean score of one setting plus its per-trial scores (trial number -> Score)."""

    mean: Score
    trials: dict[int, Score]


@dataclass(frozen=True)
class EvalResult:
    """Scores of a protocol: per setting (``all``/``indoor`` or ``v2t``/``t2v``), averaged and per trial."""

    protocol: str
    settings: dict[str, SettingResult]
    headline_name: str
    headline: float
    extra: dict[str, object] = field(default_factory=dict)

    def as_rows(self, per_trial: bool = False) -> list[dict[str, object]]:
        """Table rows ``{protocol, setting, trial, r1..mINP}``; ``trial`` is ``"mean"`` on average rows."""
        rows = []
        for name, result in self.settings.items():
            rows.append({"protocol": self.protocol, "setting": name, "trial": "mean", **result.mean.metrics()})
            if per_trial:
                rows += [{"protocol": self.protocol, "setting": name, "trial": t, **s.metrics()}
                         for t, s in result.trials.items()]
        return rows


@dataclass(frozen=True)
class _Task:
    setting: str
    trial: int
    query: pa.Table
    gallery: pa.Table


_DEFAULT_TRIALS = {"sysu": protocols.SYSU_TRIALS, "regdb": (1,), "llcm": protocols.LLCM_TRIALS}
_DEFAULT_MODES = {"sysu": protocols.SYSU_MODES, "regdb": protocols.DIRECTIONS, "llcm": protocols.DIRECTIONS}


def evaluate(protocol: str, root: str, embed: Embed, *, trials: Sequence[int] | None = None,
             modes: Sequence[str] | None = None, max_rank: int = 20, shots: int = 1) -> EvalResult:
    """Evaluate ``embed`` on ``protocol`` (``sysu``, ``regdb`` or ``llcm``) under the dataset at ``root``.

    ``trials`` default: SYSU 0-9, LLCM 0-9, RegDB 1 (pass the trial the model was trained on).
    ``modes``: SYSU ``all``/``indoor``; RegDB/LLCM directions ``v2t``/``t2v``. ``shots``: SYSU
    gallery images per (identity, camera), 1 or 10. Each distinct image is embedded once.
    The headline is the first mode's mAP (SYSU all-search by default).
    """
    if protocol not in _DEFAULT_TRIALS:
        raise UserError(f"protocol: {protocol!r} is not one of {', '.join(_DEFAULT_TRIALS)}")
    trials = tuple(_DEFAULT_TRIALS[protocol] if trials is None else trials)
    modes = tuple(_DEFAULT_MODES[protocol] if modes is None else modes)
    if not trials or not modes:
        raise UserError("evaluate: trials and modes must not be empty")
    if shots != 1 and protocol != "sysu":
        raise UserError(f"shots: multi-shot galleries exist only for sysu, not {protocol}")
    tasks = _tasks(protocol, root, trials, modes, shots)
    images = _distinct_images([t.query for t in tasks] + [t.gallery for t in tasks])
    features = np.asarray(embed(images), dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != images.num_rows:
        raise ValueError(f"embed: returned shape {features.shape} for {images.num_rows} images")
    score = {"sysu": eval_sysu, "llcm": eval_llcm}.get(protocol)
    per_setting: dict[str, dict[int, Score]] = {m: {} for m in modes}
    for task in tasks:
        q, g = task.query, task.gallery
        distmat = -np.matmul(features[_rows_of(q, images)], features[_rows_of(g, images)].T)
        q_pids, g_pids = q["pid"].to_numpy(), g["pid"].to_numpy()
        if score is None:
            result = eval_regdb(distmat, q_pids, g_pids, max_rank)
        else:
            result = score(distmat, q_pids, g_pids, q["camid"].to_numpy(), g["camid"].to_numpy(), max_rank)
        per_setting[task.setting][task.trial] = Score(*result)
    return _result(protocol, per_setting, extra={"num_images": images.num_rows})


def evaluate_pairs(query_feats: np.ndarray, gallery_feats: np.ndarray, query_pids: np.ndarray,
                   gallery_pids: np.ndarray, *, max_rank: int = 20, setting: str = "t2v") -> EvalResult:
    """Score a carved validation split (query infrared, gallery every visible image): no removal, standard CMC.

    Used for model selection (``--select-on val``); the headline is the setting's mAP.
    """
    q = np.asarray(query_feats, dtype=np.float64)
    g = np.asarray(gallery_feats, dtype=np.float64)
    cmc, m_ap, m_inp = eval_regdb(-np.matmul(q, g.T), np.asarray(query_pids), np.asarray(gallery_pids), max_rank)
    return _result("val", {setting: {0: Score(cmc, m_ap, m_inp)}})


def _tasks(protocol: str, root: str, trials: Sequence[int], modes: Sequence[str], shots: int) -> list[_Task]:
    allowed = _DEFAULT_MODES[protocol]
    for mode in modes:
        if mode not in allowed:
            raise UserError(f"modes: {mode!r} is not one of {', '.join(allowed)} for {protocol}")
    if protocol == "sysu":
        queries = {mode: protocols.sysu_query(root, mode) for mode in modes}
        return [_Task(mode, t, queries[mode], protocols.sysu_gallery(root, mode, t, shots))
                for mode in modes for t in trials]
    if protocol == "regdb":
        return [_Task(mode, t, *protocols.regdb_sets(root, t, mode)) for mode in modes for t in trials]
    queries = {mode: protocols.llcm_query(root, mode) for mode in modes}
    return [_Task(mode, t, queries[mode], protocols.llcm_gallery(root, mode, t)) for mode in modes for t in trials]


def _distinct_images(tables: list[pa.Table]) -> pa.Table:
    """Rows of ``tables`` deduplicated by path (first occurrence kept, in order of appearance)."""
    stacked = pa.concat_tables(tables)
    first = pc.index_in(pc.unique(stacked["path"]), value_set=stacked["path"])
    return stacked.take(first)


def _rows_of(table: pa.Table, images: pa.Table) -> np.ndarray:
    return pc.index_in(table["path"], value_set=images["path"]).to_numpy()


def _mean(values: list):
    """Running sum in order divided by the count (the reference scripts' trial average)."""
    return sum(values) / len(values)


def _result(protocol: str, per_setting: dict[str, dict[int, Score]], extra: dict | None = None) -> EvalResult:
    settings = {}
    for name, trials in per_setting.items():
        scores = list(trials.values())
        mean = Score(_mean([s.cmc for s in scores]), _mean([s.mAP for s in scores]), _mean([s.mINP for s in scores]))
        settings[name] = SettingResult(mean=mean, trials=trials)
    first = next(iter(settings))
    return EvalResult(protocol=protocol, settings=settings, headline_name=f"{first}/mAP",
                      headline=settings[first].mean.mAP, extra=extra or {})
