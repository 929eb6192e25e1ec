"""User-facing errors: one clear line, exit status 2, no traceback."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """Bad input from the user. The message is one line naming the thing and what is wrong."""


class UserArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a :class:`UserError` (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main(argv)``; turn a :class:`UserError` into ``error: ...`` on stderr and exit status 2."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
