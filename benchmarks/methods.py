"""Every method's default synthetic demo, and the supervised upper bound, with the exact CLI a user runs.

For each method (and ``--supervised`` on the baseline), in sequence on this machine::

    python -m raytrain_vireid.run --num-workers W --method M --name bench-M --storage-path DIR --set run.progress=plain

then reads the run folder: the final (last-epoch) SYSU all-search and indoor scores (``final_eval.json``), the
untrained network's score (epoch -1) and the last epoch's pseudo-label ARI per modality (``metrics.csv``), and
the wall time of the command (Ray start-up and data preparation included; the synthetic data is generated
once, before the first timed run). A last row scores the hand-crafted prior (``pseudo.prior: hog``) on its own,
as the embedding, with no learning at all. Prints a Markdown table, then each row's ratios to the untrained
network and to the supervised upper bound (issue 4's bars: at least 2× and 60 %), and writes both to
``DIR/methods.md``.

``--ssl-epochs N`` first trains a self-supervised start: one run of N instance-contrast warm-up epochs and no
clustering (``--set train.epochs=N --set train.warmup_epochs=N``); every row then starts from its last checkpoint
(``--set train.init_checkpoint=... --set train.warmup_epochs=0``), the supervised upper bound included.

    python benchmarks/methods.py [--methods baseline,mult,salcr,sdcl,hil] [--num-workers 2] [--storage-path DIR]
        [--ssl-epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from raytrain_vireid.config import METHODS, build_config
from raytrain_vireid.data.images import read_resized
from raytrain_vireid.errors import UserArgumentParser, UserError, run_cli as run_command
from raytrain_vireid.eval.evaluate import evaluate
from raytrain_vireid.pseudo.descriptors import DESCRIPTORS
from raytrain_vireid.train.launch import prepare_data
from raytrain_vireid.train.report import read_metrics

SUPERVISED = "supervised"
PRIOR = "prior"
LABELS = {SUPERVISED: "supervised upper bound (baseline network, true ids)",
          PRIOR: "hand-crafted prior alone (pseudo.prior hog, no learning)"}


def run_cli(name: str, args: argparse.Namespace, *options: str) -> tuple[Path, int, float]:
    """``python -m raytrain_vireid.run`` with the benchmark's workers, storage and ``--set``s (``args.sets``: plain
    ``KEY=VALUE`` strings) plus ``options``; the run folder, exit status and wall time (output in
    ``<run folder>.log``)."""
    run_dir = Path(args.storage_path) / name
    if run_dir.exists():
        raise UserError(f"{run_dir} exists; choose another --storage-path (a benchmark never resumes)")
    sets = [item for setting in ("run.progress=plain", *args.sets) for item in ("--set", setting)]
    command = [sys.executable, "-m", "raytrain_vireid.run", "--num-workers", str(args.num_workers), "--name", name,
               "--storage-path", args.storage_path, *sets, *options]
    start = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    return run_dir, code, time.perf_counter() - start


def ssl_start(epochs: int, args: argparse.Namespace) -> list[str]:
    """Train the self-supervised start (``epochs`` warm-up epochs only); the ``--set``s that start a run from it."""
    run_dir = Path(args.storage_path) / "bench-ssl"
    if (run_dir / "final_eval.json").is_file():  # a finished start is reused: it is not one of the measured rows
        print(f"self-supervised start: reusing {run_dir}", flush=True)
    else:
        run_dir, code, wall = run_cli(run_dir.name, args, "--method", "baseline", "--set", f"train.epochs={epochs}",
                                      "--set", f"train.warmup_epochs={epochs}")
        if code != 0:
            raise SystemExit(f"error: the self-supervised run failed (exit {code}, see {run_dir.with_suffix('.log')})")
        print(f"self-supervised start: {epochs} epochs in {wall:.0f} s", flush=True)
    checkpoint = max((p for p in run_dir.glob("checkpoint_*") if p.is_dir()), key=lambda path: path.stat().st_mtime)
    return ["--set", f"train.init_checkpoint={checkpoint}", "--set", "train.warmup_epochs=0"]


def run_one(method: str, args: argparse.Namespace) -> dict[str, object]:
    """One demo run through the CLI; its scores, wall time and run folder."""
    options = ["--method", "baseline", "--supervised", "--set", "eval.untrained=true"] if method == SUPERVISED \
        else ["--method", method]
    run_dir, code, wall = run_cli(f"bench-{method}", args, *options, *args.start)
    if code != 0:
        return {"method": method, "status": f"failed (exit {code}, see {run_dir.with_suffix('.log')})", "wall_s": wall,
                "run_dir": run_dir}
    final = json.loads((run_dir / "final_eval.json").read_text())
    rows = {row["name"]: row for row in final["rows"]}
    history = read_metrics(run_dir)
    untrained = next((row for row in history if row["epoch"] == -1), {})
    last = next((row for row in reversed(history) if "ari_visible" in row), {})
    return {"method": method, "status": "ok", "epochs": final["epoch"] + 1, "wall_s": wall, "run_dir": run_dir,
            "all": rows.get("sysu all", {}), "indoor": rows.get("sysu indoor", {}),
            "untrained_mAP": untrained.get("mAP"), "ari_visible": last.get("ari_visible"),
            "ari_infrared": last.get("ari_infrared")}


def prior_alone(args: argparse.Namespace) -> dict[str, object]:
    """The hand-crafted prior as the embedding of the test protocol (the synthetic profile's resolution)."""
    config = build_config("baseline", overrides=args.sets)
    data = prepare_data(config)
    describe, h, w = DESCRIPTORS["hog"], config.data.height, config.data.width
    start = time.perf_counter()
    result = evaluate(data.testset.protocol, data.testset.root,
                      lambda table: describe(read_resized(table["path"].to_pylist(), h, w)), trials=data.testset.trials)
    rows = {f"sysu {name}": setting.mean.metrics() for name, setting in result.settings.items()}
    return {"method": PRIOR, "status": "ok", "epochs": 0, "wall_s": time.perf_counter() - start,
            "all": rows.get("sysu all", {}), "indoor": rows.get("sysu indoor", {}), "untrained_mAP": None,
            "ari_visible": None, "ari_infrared": None}


def ratios(results: list[dict[str, object]]) -> str:
    """Each row's all-search mAP against the untrained network's and the supervised bound's (same command)."""
    by_method = {r["method"]: r for r in results if r["status"] == "ok"}
    bound = by_method.get(SUPERVISED, {}).get("all", {}).get("mAP")
    lines = []
    for r in by_method.values():
        if r["method"] == SUPERVISED:
            continue
        score, untrained = r["all"].get("mAP"), r["untrained_mAP"]
        parts = [f"{score / untrained:.2f}x the untrained network" if untrained else None,
                 f"{100 * score / bound:.0f} % of the supervised upper bound" if bound else None]
        lines.append(f"- {r['method']}: " + ", ".join(p for p in parts if p))
    return "\n".join(lines)


def _pct(value: object) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"


def table(results: list[dict[str, object]]) -> str:
    lines = ["| method | all mAP | all R1 | all mINP | indoor mAP | untrained all mAP | ARI vis / IR (last epoch) "
             "| epochs | wall time |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['status']} | | | | | | | {r['wall_s']:.0f} s |")
            continue
        a, i = r["all"], r["indoor"]
        ari = "–" if r["ari_visible"] is None else f"{r['ari_visible']:.3f} / {r['ari_infrared']:.3f}"
        label = LABELS.get(r["method"], r["method"])
        lines.append(f"| {label} | {_pct(a.get('mAP'))} | {_pct(a.get('r1'))} | {_pct(a.get('mINP'))} | "
                     f"{_pct(i.get('mAP'))} | {_pct(r['untrained_mAP'])} | {ari} | {r['epochs']} | {r['wall_s']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Bad arguments or ``--set``s: one ``error:`` line and exit status 2 (``raytrain_vireid.errors``)."""
    parser = UserArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised upper-bound row")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--storage-path", default="/tmp/raytrain-vireid-methods")
    parser.add_argument("--ssl-epochs", type=int, default=0,
                        help="start every run from a self-supervised run of this many epochs (0: from scratch)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra --set for every run (e.g. data.cache_dir=...)")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown {unknown[0]!r}; valid: {', '.join(METHODS)}")
    config = build_config("baseline", overrides=args.sets)  # bad --sets stop here, before anything is written
    Path(args.storage_path).mkdir(parents=True, exist_ok=True)
    prepare_data(config)  # generate the synthetic data before timing anything
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; {args.num_workers} Ray workers per run")
    args.start = ssl_start(args.ssl_epochs, args) if args.ssl_epochs > 0 else []
    results = []
    for method in methods + ([] if args.no_supervised else [SUPERVISED]):
        results.append(run_one(method, args))
        print(f"{method}: {results[-1]['status']} in {results[-1]['wall_s']:.0f} s", flush=True)
    results.append(prior_alone(args))
    text = table(results) + "\n\n" + ratios(results)
    (Path(args.storage_path) / "methods.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(run_command(main))
