"""``python -m raytrain_vireid.data SPEC [--verify]``: build (or load) a manifest and summarise it."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..errors import UserArgumentParser, run_cli
from .manifest import load_manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = UserArgumentParser(prog="python -m raytrain_vireid.data", description=__doc__)
    parser.add_argument("spec", help="synthetic | sysu:PATH | regdb:PATH[:TRIAL] | llcm:PATH")
    parser.add_argument("--verify", action="store_true", help="decode every image")
    parser.add_argument("--skip-bad-images", action="store_true", help="with --verify: drop bad images with a warning")
    parser.add_argument("--cache-dir", help="where manifests go when the data folder is read-only")
    args = parser.parse_args(argv)
    table = load_manifest(args.spec, cache_dir=args.cache_dir, verify=args.verify,
                          on_bad_image="skip" if args.skip_bad_images else "error")
    rows = list(zip(table["split"].to_pylist(), table["modality"].to_pylist(), table["camid"].to_pylist(),
                    table["pid"].to_pylist()))
    print(f"{args.spec}: {table.num_rows} images")
    for split in sorted({r[0] for r in rows}):
        part = [r for r in rows if r[0] == split]
        by_modality = Counter("visible" if r[1] == 0 else "infrared" for r in part)
        cams = Counter(r[2] for r in part)
        print(f"  {split}: {len({r[3] for r in part})} identities, {dict(by_modality)}, "
              f"per camera {dict(sorted(cams.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
