"""Issue 4's time bar: on a 2-core machine the default command, ``python -m raytrain_vireid.run --num-workers 2``,
finishes in under 10 minutes.

Runs that command once, as a user would (the runner of ``benchmarks/methods.py``, so the same CLI and log file)::

    python -m raytrain_vireid.run --num-workers W --method baseline --name bench-baseline --storage-path DIR \
        --set run.progress=plain [--set KEY=VALUE ...]

and prints what it measured and on what: the CPU and whether it computes bfloat16 natively, the precision
``train.precision: auto`` chose, the wall time of the whole command (Ray start-up, data, the untrained network's
evaluation, 12 epochs and the final evaluation) against the 600-s bar, the per-phase sums of ``metrics.csv``, the
training images/s, and the untrained and last-epoch all-search mAP (issue 4's other bar: at least 2x). With
``--cold-cache`` the synthetic tree goes to a new folder under DIR and is generated inside the timed command, as on a
new machine; otherwise the user's cache is used (and filled by the command if empty; the output says which). Writes
the same lines to ``DIR/wall_time.md``. Wall time is the machine's and its hour's: run nothing beside it, and compare
only runs on one machine.

    python benchmarks/wall_time.py [--num-workers 2] [--storage-path DIR] [--cold-cache] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import run_one  # noqa: E402  (the sibling benchmark's runner and reader of a run folder)
from train_throughput import PHASES, machine  # noqa: E402

from raytrain_vireid.config import build_config  # noqa: E402
from raytrain_vireid.cpu import CPUINFO, cpuinfo  # noqa: E402
from raytrain_vireid.data.synthetic import COMPLETE_MARKER  # noqa: E402
from raytrain_vireid.errors import UserArgumentParser, UserError, run_cli as run_command  # noqa: E402
from raytrain_vireid.train.launch import prepare_data  # noqa: E402
from raytrain_vireid.train.report import read_metrics  # noqa: E402

BAR_S = 600.0
METHOD = "baseline"  # the default command's method
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_instructions(path: Path = CPUINFO) -> str:
    """The CPU's native bfloat16 instruction sets as ``/proc/cpuinfo`` lists them, or a line saying there are none."""
    try:
        flags = cpuinfo(path).get("flags", "").split()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    found = [flag for flag in BF16_FLAGS if flag in flags]
    return ", ".join(found) if found else "none (bfloat16 would be emulated)"


def summary(run_dir: Path, result: dict[str, object], cache: str) -> list[str]:
    """The lines this benchmark prints for a finished default command: ``result`` is ``methods.run_one``'s."""
    wall = float(result["wall_s"])
    verdict = "met" if wall < BAR_S else "not met"
    lines = [f"- wall time of the command: **{wall:.0f} s** ({wall / 60:.1f} min) against {BAR_S:.0f} s: {verdict} "
             f"on this machine", f"- synthetic tree: {cache}"]
    if result["status"] != "ok":
        return [*lines, f"- run: {result['status']}"]
    precision = json.loads((run_dir / "final_eval.json").read_text()).get("precision", "unknown")
    history = read_metrics(run_dir)
    phases = ", ".join(f"{phase.removeprefix('time_')} {sum(row.get(phase, 0.0) for row in history):.0f} s"
                       for phase in PHASES)
    speeds = [row["images_per_s"] for row in history if "images_per_s" in row]
    final, untrained = float(result["all"]["mAP"]), result["untrained_mAP"]
    scores = f"- all-search mAP: {100 * final:.2f} % at the last epoch (epoch {int(result['epochs']) - 1})"
    if untrained:
        scores += f", {100 * float(untrained):.2f} % untrained: {final / float(untrained):.2f}x (bar: 2x)"
    lines += [f"- precision `train.precision: auto` chose: {precision}", f"- phases (sum over epochs): {phases}",
              f"- training images/s per epoch: {min(speeds):.0f}–{max(speeds):.0f}" if speeds else
              "- training images/s: none logged", scores]
    return lines


def main(argv: list[str] | None = None) -> None:
    """Bad arguments or ``--set``s, or an existing run folder: one ``error:`` line and exit status 2."""
    parser = UserArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--storage-path", default="/tmp/raytrain-vireid-wall-time")
    parser.add_argument("--cold-cache", action="store_true",
                        help="generate the synthetic tree inside the timed command, into DIR/synthetic-cache")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra --set for the run (the bar is about the default: say why in the results)")
    args = parser.parse_args(argv)
    storage = Path(args.storage_path)
    if args.cold_cache:
        cache_dir = storage / "synthetic-cache"
        if cache_dir.exists():
            raise UserError(f"--cold-cache: {cache_dir} exists; choose another --storage-path")
        args.sets = [*args.sets, f"data.cache_dir={cache_dir}"]
    config = build_config(METHOD, overrides=args.sets)  # bad --sets stop here, before anything is written
    storage.mkdir(parents=True, exist_ok=True)
    args.start = []  # run_one's options after the method's: no self-supervised start
    started = time.time()
    print(f"machine: {machine()}; native bfloat16: {bf16_instructions()}; {args.num_workers} Ray workers; "
          f"started {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    result = run_one(METHOD, args)
    run_dir = result["run_dir"]
    cache = "not checked (the command failed)"
    if result["status"] == "ok":
        tree = Path(prepare_data(config).testset.root)  # already there: the command found or made it
        made = (tree / COMPLETE_MARKER).stat().st_mtime >= started
        cache = f"{tree} ({'generated inside the timed command' if made else 'already in the cache, not timed'})"
    text = "\n".join(summary(run_dir, result, cache))
    (storage / "wall_time.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(run_command(main))
