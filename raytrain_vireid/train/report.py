"""Run outputs: per-epoch ``metrics.csv`` + TensorBoard scalars, and the final ``report.md`` with plots.

Everything here is rank-0, driver-side bookkeeping; nothing needs Ray. Files are replaced atomically
(temporary name in the same folder, then ``os.replace``) so an interrupted run never leaves a
half-written report or metrics table behind.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import yaml  # noqa: E402

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
REPORT_FILE = "report.md"
TABLE_COLUMNS = (
    ("r1", "Rank-1"), ("r5", "Rank-5"), ("r10", "Rank-10"), ("r20", "Rank-20"), ("mAP", "mAP"), ("mINP", "mINP")
)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


# --------------------------------------------------------------------------------------------
# metrics.csv + TensorBoard


def _parse_cell(text: str) -> float | int | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` (a file or a run folder) as dicts of numbers; empty cells are left out."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            {key: value for key, value in ((k, _parse_cell(v)) for k, v in row.items()) if value is not None}
            for row in csv.DictReader(handle)
        ]


class MetricsLogger:
    """Per-epoch metrics of one run: ``run_dir/metrics.csv`` and TensorBoard scalars under ``run_dir/tensorboard``.

    The CSV header is the union of the keys seen so far (``epoch`` first); when a new key appears the
    file is rewritten atomically with the wider header, otherwise a row is appended. Reopening a run
    folder keeps its rows; logging an epoch at or before the last logged one (a run resumed from an
    earlier checkpoint) replaces the rows from that epoch on, so no epoch appears twice.
    """

    def __init__(self, run_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self.rows = read_metrics(self.path)
        self.fields = ["epoch"] + [key for key in _union_keys(self.rows) if key != "epoch"]
        self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))

    def log(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of ``epoch`` (CSV row + TensorBoard scalars at step ``epoch``)."""
        row = {"epoch": int(epoch), **{key: _number(key, value) for key, value in metrics.items()}}
        new_keys = [key for key in row if key not in self.fields]
        replaces = bool(self.rows) and self.rows[-1]["epoch"] >= row["epoch"]
        if replaces:
            self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]]
        self.rows.append(row)
        self.fields.extend(new_keys)
        if new_keys or replaces or not self.path.exists():
            _atomic_write_text(self.path, self._csv_text(self.rows, header=True))
        else:
            with self.path.open("a", newline="") as handle:
                handle.write(self._csv_text([row], header=False))
        for key, value in row.items():
            if key != "epoch":
                self._writer.add_scalar(key, value, global_step=row["epoch"])
        self._writer.flush()

    def _csv_text(self, rows: Iterable[Mapping[str, Any]], header: bool) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        self._writer.close()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _number(key: str, value: Any) -> float | int:
    if hasattr(value, "item"):  # NumPy / torch scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric {key}: expected a number, got {value!r}")
    return value


def _union_keys(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


# --------------------------------------------------------------------------------------------
# report.md


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the rows where ``key`` holds a finite number."""
    points = [
        (row["epoch"], float(row[key]))
        for row in history
        if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _save_plot(
    path: Path, title: str, xlabel: str, ylabel: str, lines: Mapping[str, tuple[Sequence, Sequence]]
) -> None:
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for label, (x, y) in lines.items():
        axes.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=label)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        _atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    finally:
        plt.close(figure)


# (file stem, title, y label, scale, [(history key, legend label), ...]); scale 100 shows fractions as %.
EPOCH_PLOTS = (
    ("accuracy", "mAP, Rank-1 and mINP per epoch", "%", 100.0, [("mAP", "mAP"), ("r1", "Rank-1"), ("mINP", "mINP")]),
    ("clusters", "Pseudo-identities per epoch", "clusters", 1.0,
     [("clusters_visible", "visible"), ("clusters_infrared", "infrared")]),
    ("outliers", "DBSCAN outlier rate per epoch", "% of images", 100.0,
     [("outlier_rate_visible", "visible"), ("outlier_rate_infrared", "infrared")]),
    ("ari", "Pseudo-label ARI against the true identities", "ARI", 1.0,
     [("ari_visible", "visible"), ("ari_infrared", "infrared")]),
    ("neighbours", "5 nearest neighbours of the true identity", "%", 100.0,
     [("knn_precision_visible", "visible → visible"), ("knn_precision_infrared", "infrared → infrared"),
      ("knn_precision_cross", "infrared → visible")]),
    ("loss", "Training loss per epoch", "loss", 1.0, [("loss", "loss")]),
)


def _epoch_plots(history: Sequence[Mapping[str, Any]], plots_dir: Path) -> list[tuple[str, str]]:
    """Write the per-epoch plots that have data; return (title, relative path) of each."""
    written = []
    time_keys = sorted(k for k in _union_keys(history) if k.startswith("time_"))
    specs = list(EPOCH_PLOTS) + [("time", "Seconds per epoch by phase", "s", 1.0, [(k, k[5:]) for k in time_keys])]
    for stem, title, ylabel, scale, keys in specs:
        lines = {}
        for key, label in keys:
            x, y = _series(history, key)
            if x:
                lines[label] = (x, [v * scale for v in y])
        if lines:
            _save_plot(plots_dir / f"{stem}.png", title, "epoch", ylabel, lines)
            written.append((title, f"{PLOTS_DIR}/{stem}.png"))
    return written


def _cmc_plot(cmc: Mapping[str, Sequence[float]], plots_dir: Path) -> list[tuple[str, str]]:
    lines = {
        name: (list(range(1, len(curve) + 1)), [100.0 * v for v in curve]) for name, curve in cmc.items() if len(curve)
    }
    if not lines:
        return []
    _save_plot(plots_dir / "cmc.png", "CMC of the final evaluation", "rank", "matching rate (%)", lines)
    return [("CMC of the final evaluation", f"{PLOTS_DIR}/cmc.png")]


def _percent(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{100.0 * value:.2f}"
    return "–"


def format_final_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of the final evaluation; fractions shown as percentages with 2 decimals."""
    lines = ["| Setting | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "|---|" + "---:|" * len(TABLE_COLUMNS)]
    for row in rows:
        cells = " | ".join(_percent(row.get(key)) for key, _ in TABLE_COLUMNS)
        lines.append(f"| {row.get('name', '')} | {cells} |")
    return "\n".join(lines)


def describe_protocol(config: Mapping[str, Any]) -> str:
    """One sentence naming the evaluation protocol of the run's dataset."""
    spec = str(config.get("data", {}).get("spec", "synthetic"))
    kind = spec.split(":", 1)[0]
    trials = config.get("eval", {}).get("trials", 10)
    sysu = (
        "infrared queries (cameras 3 and 6) against a visible gallery, all-search (cameras 1, 2, 4, 5) and "
        "indoor-search (cameras 1, 2), single-shot, cam-2 gallery images removed for cam-3 queries, "
        f"mean over {trials} trials"
    )
    if kind == "sysu":
        return f"SYSU-MM01 protocol: {sysu}."
    if kind == "synthetic":
        return f"Embedded synthetic data in the SYSU-MM01 layout, evaluated with the SYSU-MM01 protocol: {sysu}."
    if kind == "regdb":
        trial = spec.split(":")[2] if spec.count(":") >= 2 else "1"
        return f"RegDB protocol (trial {trial}): visible→thermal and thermal→visible, full test split, no removal."
    if kind == "llcm":
        return "LLCM protocol: visible→infrared and infrared→visible test sets."
    return f"Data {spec}."


def _selection_sentence(config: Mapping[str, Any], last_epoch: Any) -> str:
    if config.get("eval", {}).get("select_on") == "val":
        return ("The reported model was selected on a validation split carved from the training identities; "
                "the test set was never used for selection.")
    at = f" (epoch {last_epoch})" if last_epoch is not None else ""
    return (
        f"The numbers are those of the model after the **last** epoch{at}; "
        "no checkpoint is selected on the test set."
    )


def _history_table(history: Sequence[Mapping[str, Any]]) -> str:
    keys = [k for k in ("mAP", "r1", "mINP", "clusters_visible", "clusters_infrared", "outlier_rate_visible",
                        "outlier_rate_infrared", "ari_visible", "ari_infrared", "loss") if _series(history, k)[0]]
    if not keys:
        return ""
    percent = {"mAP", "r1", "mINP", "outlier_rate_visible", "outlier_rate_infrared"}

    def cell(row: Mapping[str, Any], key: str) -> str:
        value = row.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return ""
        if key in percent:
            return _percent(value)
        return f"{value:.0f}" if key.startswith("clusters") else f"{value:.4f}"

    lines = ["| epoch | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    lines += [f"| {row['epoch']} | " + " | ".join(cell(row, k) for k in keys) + " |" for row in history]
    return "\n".join(lines)


def write_report(
    run_dir: str | Path,
    history: Sequence[Mapping[str, Any]],
    final: Mapping[str, Any],
    config_dict: Mapping[str, Any],
) -> Path:
    """Write ``run_dir/report.md`` and its plots in ``run_dir/plots/``; return the report's path.

    ``history``: one dict per epoch with ``epoch`` and any of ``mAP``, ``r1``, ``mINP``,
    ``clusters_{visible,infrared}``, ``outlier_rate_{visible,infrared}``, ``ari_{visible,infrared}``,
    ``knn_precision_{visible,infrared,cross}``, ``loss``, ``time_*`` (a plot is left out when its keys are
    absent). ``final``:
    ``{"rows": [{"name", "r1", "r5", "r10", "r20", "mAP", "mINP"}, ...], "cmc": {name: [fractions]}}``.
    """
    run_dir = Path(run_dir)
    plots_dir = run_dir / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    history = sorted(history, key=lambda row: row["epoch"])
    plots = _epoch_plots(history, plots_dir) + _cmc_plot(final.get("cmc") or {}, plots_dir)
    last_epoch = final.get("epoch", history[-1]["epoch"] if history else None)
    run = config_dict.get("run", {})
    train = config_dict.get("train", {})
    name = run.get("name") or run_dir.name
    parts = [
        f"# Run report: {name}",
        "",
        f"- Method: `{config_dict.get('method', '?')}`"
        + (" (supervised upper bound: trained with the true identities)" if config_dict.get("supervised") else ""),
        f"- Data: `{config_dict.get('data', {}).get('spec', '?')}`",
        f"- Epochs: {train.get('epochs', '?')}, Ray workers: {run.get('num_workers', '?')}"
        + (", GPU" if run.get("use_gpu") else ", CPU"),
        "",
        "## Final evaluation",
        "",
        describe_protocol(config_dict) + " " + _selection_sentence(config_dict, last_epoch)
        + " Values in %.",
        "",
        format_final_table(final.get("rows") or []),
        "",
    ]
    if plots:
        parts += ["## Plots", ""]
        for title, rel in plots:
            parts += [f"### {title}", "", f"![{title}]({rel})", ""]
    table = _history_table(history)
    if table:
        parts += ["## Per-epoch metrics", "", "Accuracy and outlier rates in %; full series in `metrics.csv`.", "",
                  table, ""]
    parts += ["## Resolved configuration", "", "Also in `config.yaml`; `python -m raytrain_vireid.run --config "
              "config.yaml` repeats the run.", "", "```yaml",
              yaml.safe_dump(dict(config_dict), sort_keys=False).rstrip(), "```", ""]
    path = run_dir / REPORT_FILE
    _atomic_write_text(path, "\n".join(parts))
    return path
