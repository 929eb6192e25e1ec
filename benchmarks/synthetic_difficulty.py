"""How hard the synthetic persons are without learning, and how long they take to generate.

Generates the default synthetic tree (``raytrain_vireid.data.synthetic.DEFAULT_SYNTHETIC``) into a fresh
folder (timed), then scores nearest-neighbour retrieval on raw pixels (each image resized to 32×16, RGB,
flattened, mean-centred and L2-normalised; cosine similarity) over *all* identities, with every image of the
query side against every image of the gallery side (standard CMC, no camera removal):

- infrared → visible (what the task asks for),
- visible camera 1 → visible cameras 2, 4, 5,
- infrared camera 3 → infrared camera 6.

    python benchmarks/synthetic_difficulty.py [--ids 200] [--images-per-cam 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from raytrain_vireid.data import DEFAULT_SYNTHETIC, generate, read_sysu
from raytrain_vireid.eval.evaluate import evaluate_pairs


def pixels(paths: list[str]) -> np.ndarray:
    rows = np.stack([np.asarray(Image.open(p).convert("RGB").resize((16, 32)), dtype=np.float32).ravel() for p in paths])
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-6)


def score(name: str, feats: np.ndarray, pids: np.ndarray, query: np.ndarray, gallery: np.ndarray) -> None:
    result = evaluate_pairs(feats[query], feats[gallery], pids[query], pids[gallery])
    metrics = next(iter(result.settings.values())).mean.metrics()
    print(f"{name:34s} Rank-1 {metrics['r1']:.3f}  mAP {metrics['mAP']:.3f}  "
          f"({query.sum()} queries, {gallery.sum()} gallery images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=DEFAULT_SYNTHETIC["ids"])
    parser.add_argument("--images-per-cam", type=int, default=DEFAULT_SYNTHETIC["images_per_cam"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = generate(os.path.join(tmp, "synthetic"), ids=args.ids, images_per_cam=args.images_per_cam)
        wall = time.perf_counter() - start
        table = read_sysu(root)
        print(f"generated {table.num_rows} images ({args.ids} ids x 6 cameras x {args.images_per_cam}) at "
              f"{DEFAULT_SYNTHETIC['height']}x{DEFAULT_SYNTHETIC['width']} in {wall:.1f} s with {os.cpu_count()} "
              f"processes")
        feats = pixels(table["path"].to_pylist())
        pids, cams = table["pid"].to_numpy(), table["camid"].to_numpy()
        visible, infrared = np.isin(cams, (1, 2, 4, 5)), np.isin(cams, (3, 6))
        print(f"raw-pixel nearest neighbour over all {args.ids} identities (chance Rank-1 {1 / args.ids:.3f}):")
        score("infrared -> visible", feats, pids, infrared, visible)
        score("visible cam 1 -> cams 2, 4, 5", feats, pids, cams == 1, visible & (cams != 1))
        score("infrared cam 3 -> cam 6", feats, pids, cams == 3, cams == 6)


if __name__ == "__main__":
    main()
