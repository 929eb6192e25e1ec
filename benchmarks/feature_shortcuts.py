"""What a run's features group by: the person, or the background and the colours.

Reads the memory actor's instance features from one checkpoint of a run (every training image's feature
at that epoch, in the run's own row order) and, per modality, compares each image's 5 nearest neighbours in
feature space with its same-identity images and with random images of that modality:

- 5-neighbour identity precision (chance: 1 / training identities);
- mean distance between the mean *border* colours (the 4 outermost pixel columns on each side of the image
  resized to 32×64, RGB in [0, 1]): on the synthetic persons, which are centred and narrower than the crop,
  nearly all background;
- mean distance between the mean *centre* colours (rows 16–47, columns 10–21: the torso);

and, across modalities, the identity precision of each infrared image's 5 nearest visible images.

If neighbours' borders are much closer than random pairs' while same-identity pairs' are not, the features
match the background, a shortcut the pseudo-labels then reinforce.

    python benchmarks/feature_shortcuts.py RUN_FOLDER/checkpoint_... [--pairs-per-image 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from raytrain_vireid import MODALITY_NAMES
from raytrain_vireid.config import load_config
from raytrain_vireid.pseudo.engine import NEIGHBOUR_K
from raytrain_vireid.pseudo.knn import knn_search, l2_normalize
from raytrain_vireid.pseudo.quality import neighbour_precision
from raytrain_vireid.train.checkpoint import load_state
from raytrain_vireid.train.launch import prepare_data


def region_colours(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean border and mean centre colour of each image, at 32×64."""
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 64)), dtype=np.float32) / 255 for p in paths])
    border = np.concatenate([images[:, :, :4], images[:, :, -4:]], axis=2).mean(axis=(1, 2))
    centre = images[:, 16:48, 10:22].mean(axis=(1, 2))
    return border, centre


def mean_distance(values: np.ndarray, left: np.ndarray, right: np.ndarray) -> float:
    return float(np.linalg.norm(values[left] - values[right], axis=1).mean())


def same_identity_pairs(pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i, j), i != j, of rows with the same identity."""
    left, right = [], []
    for pid in np.unique(pids):
        members = np.nonzero(pids == pid)[0]
        i, j = np.meshgrid(members, members, indexing="ij")
        keep = i != j
        left.append(i[keep])
        right.append(j[keep])
    return np.concatenate(left), np.concatenate(right)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder inside a run folder")
    parser.add_argument("--pairs-per-image", type=int, default=5, help="random pairs drawn per image")
    args = parser.parse_args()
    config = load_config(args.checkpoint.parent / "config.yaml")
    train = prepare_data(config).train
    state = load_state(args.checkpoint)
    features = l2_normalize(np.asarray(next(iter(state["actor"]["features"].values())), dtype=np.float32))
    pids, modality = train["pid"].to_numpy(), train["modality"].to_numpy()
    paths = train["path"].to_pylist()
    print(f"{args.checkpoint} (epoch {int(state['epoch'])}): {len(paths)} training images, "
          f"{len(np.unique(pids))} identities, {features.shape[1]}-d features")
    print("modality  5-NN id precision (chance) | border colour distance: 5-NN / same id / random"
          " | centre colour distance: 5-NN / same id / random")
    rng = np.random.default_rng(0)
    for m, name in MODALITY_NAMES.items():
        rows = np.nonzero(modality == m)[0]
        f, p = features[rows], pids[rows]
        border, centre = region_colours([paths[i] for i in rows])
        neighbours = knn_search(f, NEIGHBOUR_K + 1)[1][:, 1:]  # the search finds each row itself first
        nn_left, nn_right = np.repeat(np.arange(len(rows)), NEIGHBOUR_K), neighbours.ravel()
        id_left, id_right = same_identity_pairs(p)
        rnd_left = np.repeat(np.arange(len(rows)), args.pairs_per_image)
        rnd_right = rng.integers(0, len(rows), rnd_left.size)
        precision = neighbour_precision(neighbours, p, p)
        cells = [" / ".join(f"{mean_distance(values, a, b):.3f}" for a, b in
                            ((nn_left, nn_right), (id_left, id_right), (rnd_left, rnd_right))) for values in (border, centre)]
        print(f"{name:9s} {precision:.3f} ({1 / len(np.unique(p)):.4f})             | {cells[0]:>22s}"
              f"                          | {cells[1]:>22s}")
    visible, infrared = (np.nonzero(modality == m)[0] for m in MODALITY_NAMES)
    cross = neighbour_precision(knn_search(features[infrared], NEIGHBOUR_K, database=features[visible])[1],
                                pids[infrared], pids[visible])
    print(f"infrared -> visible 5-NN id precision: {cross:.3f} (chance {1 / len(np.unique(pids[visible])):.4f})")


if __name__ == "__main__":
    main()
