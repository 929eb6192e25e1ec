"""Synthetic cross-modality persons in the SYSU-MM01 layout: the embedded default data.

``python -m raytrain_vireid.data.synthetic --out DIR --ids N --seed S`` writes ``camX/NNNN/MMMM.jpg``
(cameras 1, 2, 4, 5 visible; 3, 6 infrared) and ``exp/{train,val,test}_id.txt``, which
:func:`raytrain_vireid.data.read_sysu` loads unchanged.

Each identity has a body layout (height, shoulder and leg widths, head size), an upper garment with a
pattern (plain, stripes, blocks or check) and a lower garment, shoes, and optional hat, bag or
backpack, each with a colour. Visible cameras render in colour under a per-camera illumination (gain,
colour cast, hue rotation, blur) over cluttered backgrounds. Infrared cameras render one thermal-like
channel: skin is warm, and every garment part has an emissivity drawn per identity *independently of
its hue*, so colour alone cannot match across modalities while shape, pattern, accessories and the heat
layout can. Every image gets pose jitter, scale, translation, a random flip and sometimes an occluder.
Drawing is vectorised over pixels (boolean masks from coordinate grids); images are independent draws
seeded by ``(seed, pid, camera, image)``, so the output is deterministic and parallel over identities.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from multiprocessing import Pool
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from ..errors import UserArgumentParser, UserError, run_cli

VISIBLE_CAMS = (1, 2, 4, 5)
INFRARED_CAMS = (3, 6)
DEFAULT_SYNTHETIC = dict(ids=200, images_per_cam=6, height=128, width=64, seed=0)
COMPLETE_MARKER = ".complete"
PATTERNS = ("plain", "stripes", "blocks", "check")
STRIPE_DIRECTIONS = ("horizontal", "vertical", "diagonal")
PRINT_SHAPES = ("disc", "square", "bar")
GENERATOR_VERSION = 2  # part of the cache key: a changed generator never reuses an older tree


def _identity(seed: int, pid: int) -> dict:
    """Appearance of one identity: layout, colours (visible) and emissivities (infrared)."""
    rng = np.random.default_rng([seed, pid])
    colour = lambda: rng.uniform(0.05, 0.95, 3)  # noqa: E731 - a tiny local factory
    return {
        "height": rng.uniform(0.82, 0.97),  # fraction of the crop height
        "shoulder": rng.uniform(0.26, 0.40),  # torso half-width, fraction of width
        "leg": rng.uniform(0.08, 0.13),
        "head": rng.uniform(0.065, 0.085),
        "torso_len": rng.uniform(0.30, 0.38),
        "upper": colour(), "upper2": colour(), "lower": colour(), "shoes": colour(),
        "skin": np.array([0.9, 0.72, 0.6]) * rng.uniform(0.55, 1.05),
        "hair": colour() * 0.5,
        "pattern": PATTERNS[rng.integers(len(PATTERNS))],
        "stripe_dir": STRIPE_DIRECTIONS[rng.integers(len(STRIPE_DIRECTIONS))],
        "period": rng.uniform(0.04, 0.09),
        # A print on the chest (shape, place, size, colour): structure that both modalities see.
        "print": PRINT_SHAPES[rng.integers(len(PRINT_SHAPES))] if rng.random() < 0.6 else None,
        "print_x": rng.uniform(-0.45, 0.45), "print_y": rng.uniform(0.2, 0.65), "print_size": rng.uniform(0.3, 0.55),
        "print_c": colour(),
        "shorts": rng.random() < 0.25,  # bare lower legs: skin, warm in infrared
        "long_hair": rng.random() < 0.3,
        "hat": rng.random() < 0.3, "hat_c": colour(),
        "bag": rng.integers(3),  # 0 none, 1 shoulder bag, 2 backpack
        "bag_c": colour(), "bag_side": rng.choice([-1, 1]),
        "short_sleeves": rng.random() < 0.4,
        # Emissivities in [0, 1], drawn independently of the colours above.
        "heat": {part: rng.uniform(0.15, 0.75)
                 for part in ("upper", "upper2", "lower", "shoes", "hat", "bag", "hair", "print")},
    }


def _camera(seed: int, cam: int) -> dict:
    rng = np.random.default_rng([seed, 10_000 + cam])
    angle = rng.uniform(-0.5, 0.5)  # hue rotation (radians) around the gray axis
    axis = np.ones(3) / np.sqrt(3)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    return {"gain": rng.uniform(0.6, 1.25), "cast": rng.uniform(0.8, 1.2, 3), "rotation": rotation,
            "blur": rng.uniform(0.0, 1.2), "noise": rng.uniform(0.01, 0.05)}


def _background(rng: np.random.Generator, h: int, w: int, channels: int, low: float, high: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    start, end = rng.uniform(low, high, channels), rng.uniform(low, high, channels)
    direction = rng.uniform(0, 1)
    t = (direction * yy + (1 - direction) * xx)[..., None]
    img = start * (1 - t) + end * t
    for _ in range(rng.integers(2, 7)):  # clutter rectangles
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = y0 + rng.integers(h // 10, h // 2), x0 + rng.integers(w // 8, w // 2)
        img[y0:y1, x0:x1] = rng.uniform(low, high, channels)
    return img


def _person_masks(ident: dict, rng: np.random.Generator, h: int, w: int) -> list[tuple[str, np.ndarray]]:
    """Painting order of (part name, mask) for one pose of ``ident``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = ident["height"] * rng.uniform(0.88, 1.0)
    ph = scale * h
    top = rng.uniform(0.0, h - ph) if h > ph else 0.0
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    head_r = ident["head"] * h * scale / ident["height"]
    head_cy = top + head_r * 1.1
    neck = head_cy + head_r
    torso_end = neck + ident["torso_len"] * ph
    feet = top + ph
    half = ident["shoulder"] * w * 0.5 * (scale / ident["height"]) * 1.6
    leg_w = ident["leg"] * w * 1.4
    spread = rng.uniform(0.0, 0.12) * w
    arm_swing = rng.uniform(-0.06, 0.06) * w
    torso = (yy >= neck) & (yy < torso_end) & (np.abs(xx - cx) <= half * (1 - 0.15 * (yy - neck) / max(torso_end - neck, 1)))
    arm_w = 0.28 * half
    arms = (yy >= neck + 2) & (yy < neck + 0.9 * (torso_end - neck) + 0.12 * ph) & (
        (np.abs(xx - (cx - half - arm_w / 2 + arm_swing)) <= arm_w / 2) | (np.abs(xx - (cx + half + arm_w / 2 - arm_swing)) <= arm_w / 2))
    sleeve_end = neck + (0.35 if ident["short_sleeves"] else 0.95) * (torso_end - neck + 0.12 * ph)
    legs = (yy >= torso_end) & (yy < feet - 0.04 * ph) & (
        (np.abs(xx - (cx - leg_w * 0.6 - spread / 2)) <= leg_w / 2) | (np.abs(xx - (cx + leg_w * 0.6 + spread / 2)) <= leg_w / 2))
    shoes = (yy >= feet - 0.04 * ph) & (yy < feet) & (
        (np.abs(xx - (cx - leg_w * 0.6 - spread / 2)) <= leg_w * 0.7) | (np.abs(xx - (cx + leg_w * 0.6 + spread / 2)) <= leg_w * 0.7))
    head = ((yy - head_cy) / head_r) ** 2 + ((xx - cx) / (head_r * 0.8)) ** 2 <= 1
    hair = head & (yy < head_cy - 0.3 * head_r)
    if ident["long_hair"]:  # down to the shoulders, behind the head
        hair = hair | ((yy >= head_cy - 0.3 * head_r) & (yy < neck + 0.06 * ph) & (np.abs(xx - cx) <= head_r * 0.95) & ~head)
    period = max(ident["period"] * h, 2.0)
    along = {"horizontal": yy - neck, "vertical": xx - cx, "diagonal": (yy - neck) + (xx - cx)}[ident["stripe_dir"]]
    stripes = (along // period) % 2 == 1
    pattern = {
        "plain": np.zeros_like(torso),
        "stripes": stripes,
        "blocks": xx > cx,
        "check": stripes ^ ((((xx - cx) // period) % 2) == 1),
    }[ident["pattern"]]
    knee = torso_end + 0.45 * (feet - torso_end)
    bare_legs = legs & (yy >= knee) if ident["shorts"] else np.zeros_like(legs)
    parts = [("skin", head | (arms & (yy >= sleeve_end)) | bare_legs), ("upper", torso | (arms & (yy < sleeve_end))),
             ("upper2", torso & pattern), ("hair", hair), ("lower", legs & ~bare_legs), ("shoes", shoes)]
    if ident["print"] is not None:
        px = cx + ident["print_x"] * half
        py = neck + ident["print_y"] * (torso_end - neck)
        size = ident["print_size"] * half
        shape = {"disc": ((yy - py) ** 2 + (xx - px) ** 2) <= size ** 2,
                 "square": (np.abs(yy - py) <= size) & (np.abs(xx - px) <= size),
                 "bar": (np.abs(yy - py) <= 0.35 * size) & (np.abs(xx - px) <= 1.6 * size)}[ident["print"]]
        parts.append(("print", torso & shape))
    if ident["hat"]:
        parts.append(("hat", (np.abs(yy - (head_cy - 0.75 * head_r)) <= 0.4 * head_r) & (np.abs(xx - cx) <= head_r * 1.1)))
    if ident["bag"] == 1:
        bx = cx + ident["bag_side"] * (half + arm_w)
        parts.append(("bag", (yy >= torso_end - 0.12 * ph) & (yy < torso_end + 0.06 * ph) & (np.abs(xx - bx) <= 0.12 * w)))
    elif ident["bag"] == 2:
        parts.append(("bag", (yy >= neck + 0.05 * ph) & (yy < torso_end - 0.05 * ph) & (np.abs(xx - cx) <= half * 1.05)
                      & (np.abs(xx - cx) >= half * 0.75)))
    return parts


_COLOUR_KEY = {"hat": "hat_c", "bag": "bag_c", "print": "print_c"}


def render(ident: dict, cam: int, infrared: bool, rng: np.random.Generator, camera: dict, h: int, w: int) -> np.ndarray:
    """One uint8 (h, w, 3) image of ``ident`` seen by ``cam``."""
    parts = _person_masks(ident, rng, h, w)
    if infrared:
        img = _background(rng, h, w, 1, 0.05, 0.35)
        for name, mask in parts:
            heat = rng.uniform(0.85, 1.0) if name == "skin" else ident["heat"][name]
            img[mask] = heat * rng.uniform(0.92, 1.08)
        img = np.repeat(img, 3, axis=2)
    else:
        img = _background(rng, h, w, 3, 0.0, 1.0)
        for name, mask in parts:
            colour = ident["skin"] if name == "skin" else ident[_COLOUR_KEY.get(name, name)]
            img[mask] = colour
        img = (img @ camera["rotation"].T) * camera["cast"]
    img = img * camera["gain"] * rng.uniform(0.85, 1.15)
    if rng.random() < 0.2:  # partial occlusion by a foreground object
        oh, ow = rng.integers(h // 6, h // 3), rng.integers(w // 3, w)
        y0, x0 = rng.integers(0, h - oh), rng.integers(0, w - ow + 1)
        img[y0 : y0 + oh, x0 : x0 + ow] = rng.uniform(0, 1, 1 if infrared else 3)
    img = img + rng.normal(0, camera["noise"], img.shape)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    out = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    if camera["blur"] > 0.2:
        out = out.filter(ImageFilter.GaussianBlur(camera["blur"]))
    return np.asarray(out)


def _write_identity(args: tuple) -> int:
    out, pid, seed, images_per_cam, h, w = args
    ident = _identity(seed, pid)
    for cam in VISIBLE_CAMS + INFRARED_CAMS:
        camera = _camera(seed, cam)
        folder = Path(out) / f"cam{cam}" / f"{pid:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(images_per_cam):
            rng = np.random.default_rng([seed, pid, cam, k])
            img = render(ident, cam, cam in INFRARED_CAMS, rng, camera, h, w)
            Image.fromarray(img).save(folder / f"{k + 1:04d}.jpg", quality=92)
    return pid


def split_ids(ids: int, seed: int, test_fraction: float = 1 / 3, val_fraction: float = 0.1) -> dict[str, list[int]]:
    """Identity numbers 1..ids split into train / val / test (SYSU-like: train+val are training ids)."""
    order = np.random.default_rng([seed, 7]).permutation(np.arange(1, ids + 1))
    n_test = min(max(1, int(round(ids * test_fraction))), ids - 2)  # leave a train and a val id
    n_val = max(1, int(round((ids - n_test) * val_fraction)))
    return {"test": sorted(order[:n_test].tolist()), "val": sorted(order[n_test : n_test + n_val].tolist()),
            "train": sorted(order[n_test + n_val :].tolist())}


def generate(out: str | Path, ids: int = DEFAULT_SYNTHETIC["ids"], seed: int = DEFAULT_SYNTHETIC["seed"],
             images_per_cam: int = DEFAULT_SYNTHETIC["images_per_cam"], height: int = DEFAULT_SYNTHETIC["height"],
             width: int = DEFAULT_SYNTHETIC["width"], test_fraction: float = 1 / 3, processes: int | None = None) -> Path:
    """Write the tree into ``out`` (created; must not hold files already); ``test_fraction`` of the
    identities are test ids, the rest training ids (a tenth of them listed in ``val_id.txt``)."""
    if not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction: must be strictly between 0 and 1, got {test_fraction}")
    if ids < 3:
        raise UserError(f"--ids: need at least 3 identities (train, val and test), got {ids}")
    if images_per_cam < 1 or height < 16 or width < 8:
        raise UserError("--images-per-cam must be >= 1, --height >= 16 and --width >= 8")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose an empty or new folder")
    (out / "exp").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), pid, seed, images_per_cam, height, width) for pid in range(1, ids + 1)]
    processes = processes or min(len(jobs), os.cpu_count() or 1)
    if processes > 1:
        with Pool(processes) as pool:
            for _ in pool.imap_unordered(_write_identity, jobs, chunksize=4):
                pass
    else:
        for job in jobs:
            _write_identity(job)
    for split, members in split_ids(ids, seed, test_fraction).items():
        (out / "exp" / f"{split}_id.txt").write_text(",".join(map(str, members)) + "\n")
    (out / COMPLETE_MARKER).write_text("")
    return out


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYTRAIN_VIREID_CACHE", Path.home() / ".cache" / "raytrain_vireid"))


def ensure_synthetic(cache_dir: str | Path | None = None, **params) -> Path:
    """The synthetic tree for ``params`` (defaults: :data:`DEFAULT_SYNTHETIC`) under ``cache_dir``,
    generated into a temporary folder and renamed into place when absent or incomplete."""
    unknown = set(params) - set(DEFAULT_SYNTHETIC)
    if unknown:
        raise UserError(f"synthetic data: unknown parameter {sorted(unknown)[0]}; valid: {', '.join(DEFAULT_SYNTHETIC)}")
    p = {**DEFAULT_SYNTHETIC, **params}
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = base / "synthetic" / f"v{GENERATOR_VERSION}-ids{p['ids']}-img{p['images_per_cam']}-{p['height']}x{p['width']}-seed{p['seed']}"
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        generate(tmp, **p)
        if target.exists() and not (target / COMPLETE_MARKER).is_file():  # an incomplete earlier attempt
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / COMPLETE_MARKER).is_file():  # not just a concurrent call that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = UserArgumentParser(prog="python -m raytrain_vireid.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--ids", type=int, default=DEFAULT_SYNTHETIC["ids"])
    parser.add_argument("--seed", type=int, default=DEFAULT_SYNTHETIC["seed"])
    parser.add_argument("--images-per-cam", type=int, default=DEFAULT_SYNTHETIC["images_per_cam"])
    parser.add_argument("--height", type=int, default=DEFAULT_SYNTHETIC["height"])
    parser.add_argument("--width", type=int, default=DEFAULT_SYNTHETIC["width"])
    parser.add_argument("--test-fraction", type=float, default=1 / 3)
    args = parser.parse_args(argv)
    out = generate(args.out, ids=args.ids, seed=args.seed, images_per_cam=args.images_per_cam, height=args.height,
                   width=args.width, test_fraction=args.test_fraction)
    splits = split_ids(args.ids, args.seed, args.test_fraction)
    print(f"{out}: {args.ids} identities (train {len(splits['train'])}, val {len(splits['val'])}, test "
          f"{len(splits['test'])}), {args.images_per_cam} images per identity per camera, "
          f"{args.ids * 6 * args.images_per_cam} images of {args.height}x{args.width}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
