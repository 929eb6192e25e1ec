import csv

import pytest

from raytrain_vireid.train.report import MetricsLogger, format_final_table, read_metrics, write_report


def _csv_rows(path):
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_metrics_csv_round_trips_and_new_key_rewrites_header(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        logger.log(0, {"loss": 2.5, "clusters_visible": 12})
        logger.log(1, {"loss": 1.0 / 3.0, "clusters_visible": 14})
        assert _csv_rows(tmp_path / "metrics.csv")[0] == ["epoch", "loss", "clusters_visible"]
        logger.log(2, {"loss": 0.25, "mAP": 0.1234567890123})
    rows = _csv_rows(tmp_path / "metrics.csv")
    assert rows[0] == ["epoch", "loss", "clusters_visible", "mAP"]
    assert rows[1] == ["0", "2.5", "12", ""] and rows[3][2] == ""
    assert read_metrics(tmp_path) == [
        {"epoch": 0, "loss": 2.5, "clusters_visible": 12},
        {"epoch": 1, "loss": 1.0 / 3.0, "clusters_visible": 14},
        {"epoch": 2, "loss": 0.25, "mAP": 0.1234567890123},
    ]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_reopening_a_run_appends_and_a_resumed_epoch_replaces_later_rows(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        for epoch in range(3):
            logger.log(epoch, {"loss": float(epoch)})
    with MetricsLogger(tmp_path) as logger:  # a second invocation of the same run
        logger.log(3, {"loss": 3.0})
    assert [row["epoch"] for row in read_metrics(tmp_path)] == [0, 1, 2, 3]
    with MetricsLogger(tmp_path) as logger:  # resumed from the epoch-1 checkpoint: epoch 2 runs again
        logger.log(2, {"loss": 9.0, "mAP": 0.5})
    assert read_metrics(tmp_path) == [
        {"epoch": 0, "loss": 0.0}, {"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 9.0, "mAP": 0.5}
    ]


def test_logger_rejects_non_numbers(tmp_path):
    with MetricsLogger(tmp_path) as logger, pytest.raises(TypeError, match="metric name: expected a number"):
        logger.log(0, {"name": "abc"})


def test_final_table_shows_percentages_with_two_decimals():
    table = format_final_table([
        {"name": "all-search", "r1": 0.123456, "r5": 0.5, "r10": 0.6, "r20": 0.75, "mAP": 0.09876, "mINP": 0.01},
        {"name": "indoor-search", "r1": 1.0, "mAP": 0.5},
    ])
    lines = table.splitlines()
    assert lines[0] == "| Setting | Rank-1 | Rank-5 | Rank-10 | Rank-20 | mAP | mINP |"
    assert lines[2] == "| all-search | 12.35 | 50.00 | 60.00 | 75.00 | 9.88 | 1.00 |"
    assert lines[3] == "| indoor-search | 100.00 | – | – | – | 50.00 | – |"


def _config(select_on="last"):
    return {"method": "baseline", "supervised": False, "data": {"spec": "sysu:/data/SYSU-MM01"},
            "train": {"epochs": 3}, "eval": {"trials": 10, "select_on": select_on},
            "run": {"num_workers": 2, "use_gpu": False, "name": "demo"}}


def test_report_has_plots_table_protocol_and_last_epoch(tmp_path):
    history = [
        {"epoch": 0, "loss": 3.0, "clusters_visible": 10, "clusters_infrared": 8, "outlier_rate_visible": 0.2,
         "outlier_rate_infrared": 0.3, "ari_visible": 0.1, "ari_infrared": 0.05, "time_relabel": 1.5,
         "knn_precision_cross": 0.02},
        {"epoch": 1, "loss": 2.0, "mAP": 0.1, "r1": 0.15, "clusters_visible": 12, "clusters_infrared": 9},
        {"epoch": 2, "loss": 1.5, "mAP": 0.2, "r1": 0.25, "mINP": 0.05},
    ]
    final = {"rows": [{"name": "all-search", "r1": 0.25, "r5": 0.4, "r10": 0.5, "r20": 0.6, "mAP": 0.2, "mINP": 0.05}],
             "cmc": {"all-search": [0.25, 0.3, 0.35, 0.4, 0.4], "indoor-search": [0.3, 0.4]}}
    path = write_report(tmp_path, history, final, _config())
    text = path.read_text()
    assert path == tmp_path / "report.md"
    assert "| all-search | 25.00 | 40.00 | 50.00 | 60.00 | 20.00 | 5.00 |" in text
    assert "SYSU-MM01 protocol" in text and "mean over 10 trials" in text
    assert "after the **last** epoch (epoch 2); no checkpoint is selected on the test set" in text
    for stem in ("accuracy", "clusters", "outliers", "ari", "neighbours", "loss", "time", "cmc"):
        png = tmp_path / "plots" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{stem}.png)" in text
    assert "| 1 | 10.00 | 15.00 |" in text  # per-epoch table, accuracy in %
    assert "method: baseline" in text


def test_report_leaves_out_plots_without_data(tmp_path):
    write_report(tmp_path, [{"epoch": 0, "loss": 1.0}], {"rows": []}, _config(select_on="val"))
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["loss.png"]
    text = (tmp_path / "report.md").read_text()
    assert "selected on a validation split carved from the training identities" in text
    assert "accuracy.png" not in text and "cmc.png" not in text


def test_numpy_scalars_keep_their_kind(tmp_path):
    import numpy as np

    with MetricsLogger(tmp_path) as logger:
        logger.log(0, {"clusters_visible": np.int64(7), "mAP": np.float32(0.5)})
    assert _csv_rows(tmp_path / "metrics.csv")[1] == ["0", "7", "0.5"]
