"""``python -m raytrain_vireid.run``: train a method with Ray Train (thin: parse → Config → fit).

Examples::

    python -m raytrain_vireid.run --num-workers 2                       # synthetic data, CPU
    python -m raytrain_vireid.run --num-workers 8 --use-gpu --method baseline --data sysu:/data/SYSU-MM01
    python -m raytrain_vireid.run --num-workers 2 --set train.epochs=4 --set pseudo.eps=0.5

Running again with the same ``--name`` and ``--storage-path`` resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from raytrain_vireid.config import METHODS, build_config
from raytrain_vireid.errors import UserArgumentParser, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = UserArgumentParser(prog="python -m raytrain_vireid.run", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-workers", type=int, help="Ray Train workers (0 = local mode in this process)")
    p.add_argument("--method", help=f"one of {', '.join(METHODS)} (default: baseline)")
    p.add_argument("--data", help="synthetic | sysu:PATH | regdb:PATH[:TRIAL] | llcm:PATH (default: synthetic)")
    p.add_argument("--epochs", type=int, help="training epochs (a resumed run may raise it)")
    p.add_argument("--config", help="YAML file of settings (e.g. a run folder's config.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set pseudo.eps=0.5 (repeatable)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--address", help="local (default: a private local Ray), auto, or ray://host:port")
    p.add_argument("--storage-path", help="folder holding run folders (default: runs)")
    p.add_argument("--name", help="run name (default: <method>-<data>-<timestamp>); an existing one resumes")
    p.add_argument("--supervised", action="store_true", default=None,
                   help="diagnostic upper bound: train with the true identities")
    p.add_argument("--cluster-backend", help="pseudo-labelling backend: auto | cpu | gpu")
    p.add_argument("--pretrained", help="PATH to a local state dict, or imagenet")
    return p


def flags_to_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The nested settings given by command-line flags (unset flags are left out)."""
    flags = {
        ("run", "num_workers"): args.num_workers, ("data", "spec"): args.data, ("train", "epochs"): args.epochs,
        ("run", "use_gpu"): args.use_gpu, ("run", "address"): args.address, ("run", "storage_path"): args.storage_path,
        ("run", "name"): args.name, ("pseudo", "backend"): args.cluster_backend, ("model", "pretrained"): args.pretrained,
    }
    settings: dict[str, Any] = {}
    for (section, key), value in flags.items():
        if value is not None:
            settings.setdefault(section, {})[key] = value
    if args.supervised:
        settings["supervised"] = True
    if args.method:
        settings["method"] = args.method
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = build_config(method=args.method, config_file=args.config, overrides=args.overrides,
                          extra=flags_to_settings(args))
    from raytrain_vireid.train.launch import fit  # imports Ray and torch: only once the input is valid

    result = fit(config)
    print(f"run folder: {result.run_dir}")
    for row in result.final.get("rows", []):
        print(f"{row['name']}: mAP {100 * row['mAP']:.2f}  Rank-1 {100 * row['r1']:.2f}  mINP {100 * row['mINP']:.2f}")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
