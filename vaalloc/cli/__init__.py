"""The ``vaalloc`` command.

One module per sub-command, each with a ``register(sub)`` that adds its parser and sets ``func``:
a function taking the parsed arguments and returning the exit status.  Bad options end in a
one-line message on stderr and a non-zero status, never a traceback: argparse handles malformed
options (status 2), and a :class:`~vaalloc.errors.VAAllocError` raised by the library for a value
it refuses is reported the same way (status 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from vaalloc.cli import compare, demo, fuzz, layout, replay, simulate, vectors
from vaalloc.errors import VAAllocError

__all__ = ["main"]

# Sub-command modules, in the order ``vaalloc --help`` lists them.
_COMMANDS = (simulate, layout, compare, vectors, fuzz, demo, replay)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaalloc", description="Model VA-range allocation and ARM LPAE page tables."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vaalloc`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except VAAllocError as exc:
        print(f"vaalloc {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``vaalloc layout | head``): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
