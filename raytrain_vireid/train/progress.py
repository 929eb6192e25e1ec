"""Progress display for workers: Ray's tqdm (bars rendered by the driver) on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
Progress = Callable[[Iterable[T], str, int], Iterable[T]]


def resolve_mode(mode: str) -> str:
    """``auto`` → ``bar`` when the driver's stderr is a terminal, else ``plain`` (decided in the driver)."""
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "plain"
    return mode


def log(message: str) -> None:
    """One progress line on stdout (written directly: Ray Train's patched ``print`` would echo it twice)."""
    sys.stdout.write(f"[raytrain_vireid] {message}\n")
    sys.stdout.flush()


def _plain(items: Iterable[T], desc: str, total: int) -> Iterator[T]:
    step = max(1, total // 4)
    start = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == total:
            log(f"{desc}: {i}/{total} ({time.perf_counter() - start:.1f} s)")


def _silent(items: Iterable[T], desc: str, total: int) -> Iterable[T]:
    return items


def make_progress(mode: str, rank: int) -> Progress:
    """A progress wrapper ``(iterable, description, total) -> iterable``; only rank 0 shows anything."""
    if rank != 0:
        return _silent
    return _bar if mode == "bar" else _plain


def _bar(items: Iterable[T], desc: str, total: int) -> Iterator[T]:
    """Ray's tqdm (rendered by the driver for every worker), closed when the loop ends."""
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(desc=desc, total=total)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
