"""What the hand-crafted prior (``pseudo.prior: hog``) finds on its own, with no learning at all.

On the default synthetic data, at the synthetic profile's 64×32 training resolution:

1. the training split (133 identities; the truth is used only to score): per modality, the share of each image's 5
   nearest same-modality images that are the same person, and from each infrared image to its 5 nearest visible
   images; then one relabelling pass of the engine on the descriptor alone (k1 15, k2 4, eps 0.6, Hungarian
   association) — ARI per modality and association accuracy, the figures the trainer logs every epoch;
2. the test protocol (SYSU-MM01 all-search and indoor, single-shot, 10 trials, the 67 test identities) with the
   descriptor as the embedding: the score to hold a trained network against.

``--compare-skimage`` adds scikit-image's ``hog`` (2×2-cell blocks, L2-Hys; ``pip install scikit-image``) on the
same images, the library version of the descriptor that ours leaves the block normalisation out of.

    python benchmarks/prior_descriptor.py [--compare-skimage]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import build_config
from raytrain_vireid.data.images import read_resized
from raytrain_vireid.eval.evaluate import evaluate
from raytrain_vireid.pseudo.descriptors import hog
from raytrain_vireid.pseudo.engine import RelabelPlan, relabel
from raytrain_vireid.pseudo.knn import knn_search
from raytrain_vireid.pseudo.quality import neighbour_precision
from raytrain_vireid.train.launch import prepare_data

K = 5


def precisions(features: np.ndarray, pids: np.ndarray, modality: np.ndarray) -> dict[str, float]:
    visible, infrared = np.flatnonzero(modality == VISIBLE), np.flatnonzero(modality == INFRARED)
    out = {}
    for name, query, database in (("visible", visible, visible), ("infrared", infrared, infrared),
                                  ("infrared->visible", infrared, visible)):
        same = query is database  # each image finds itself first: drop it
        neighbours = knn_search(features[query], K + same, features[database])[1][:, int(same):]
        out[name] = neighbour_precision(neighbours, pids[query], pids[database])
    return out


def skimage_hog(images: np.ndarray) -> np.ndarray:
    from skimage.feature import hog as sk_hog

    cell = max(1, images.shape[1] // 16)
    return np.stack([sk_hog(image, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                            block_norm="L2-Hys", channel_axis=-1) for image in images]).astype(np.float32)


def report(name: str, describe, images: np.ndarray, pids: np.ndarray, modality: np.ndarray, test_root: str,
           height: int, width: int) -> None:
    start = time.perf_counter()
    features = describe(images)
    seconds = time.perf_counter() - start
    p = precisions(features, pids, modality)
    labels = relabel({"global": features}, modality, RelabelPlan(k1=15, k2=4, eps=0.6, association="hungarian",
                                                                  backend="cpu"), true_pids=pids)
    m = labels.metrics
    result = evaluate("sysu", test_root, lambda table: describe(read_resized(table["path"].to_pylist(), height, width)),
                      trials=range(10))
    scores = {setting: r.mean for setting, r in result.settings.items()}
    print(f"{name}: {features.shape[1]}-d, {seconds:.1f} s for {len(images)} images")
    print(f"  5-NN precision: visible {p['visible']:.3f}, infrared {p['infrared']:.3f}, "
          f"infrared->visible {p['infrared->visible']:.3f} (chance {1 / len(np.unique(pids)):.4f})")
    print(f"  relabelled alone: ARI visible {m['ari_visible']:.3f}, infrared {m['ari_infrared']:.3f}; clusters "
          f"{m['clusters_visible']:.0f} / {m['clusters_infrared']:.0f}; association accuracy v->r {m['assoc_acc_v2r']:.3f}, "
          f"r->v {m['assoc_acc_r2v']:.3f}")
    print(f"  test protocol: all-search mAP {100 * scores['all'].mAP:.2f} %, Rank-1 {100 * scores['all'].rank(1):.2f} %; "
          f"indoor mAP {100 * scores['indoor'].mAP:.2f} %", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-skimage", action="store_true")
    args = parser.parse_args()
    config = build_config("baseline")  # the synthetic default: its profile's resolution
    data = prepare_data(config)
    height, width = config.data.height, config.data.width
    table = data.train
    images = read_resized(table["path"].to_pylist(), height, width)
    pids, modality = table["pid"].to_numpy(), table["modality"].to_numpy()
    print(f"training split: {table.num_rows} images of {len(np.unique(pids))} identities at {height}x{width}")
    report("pseudo.prior hog (ours: no block normalisation)", hog, images, pids, modality, data.testset.root, height,
           width)
    if args.compare_skimage:
        report("scikit-image hog (2x2 blocks, L2-Hys)", skimage_hog, images, pids, modality, data.testset.root,
               height, width)


if __name__ == "__main__":
    main()
