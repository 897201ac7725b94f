"""The ``vaalloc`` command.

One module per sub-command, each with a ``register(sub)`` that adds its parser and sets ``func``:
a function taking the parsed arguments and returning the exit status.  The arguments share one
vocabulary (:mod:`vaalloc.cli._args`: sizes, fractions, seeds, counts with caps) and the output
one set of rules (:mod:`vaalloc.cli._output`).

Exit status: 0 for an answer; 1 when the answer is "no" (a guest that does not fit, a fuzz
target that fails, a chart that could not be written: the results are printed first); 2 for
bad options, which end in a one-line message on stderr before any work, never a traceback:
argparse handles malformed options, and a :class:`~vaalloc.errors.VAAllocError` raised by the
library for a value it refuses is reported the same way; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import vaalloc
from vaalloc.cli import compare, demo, fuzz, layout, replay, simulate, vectors
from vaalloc.errors import VAAllocError

__all__ = ["main"]

# Sub-command modules, in the order ``vaalloc --help`` lists them.
_COMMANDS = (simulate, layout, compare, vectors, fuzz, demo, replay)

_DESCRIPTION = """\
Model virtual-address-range allocation, ARM LPAE page tables and Xen on ARM32's
virtual-linear page table (VLPT), and measure what each design costs.

Run 'vaalloc COMMAND --help' for a command's options. Results go to stdout, progress,
warnings and errors to stderr."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaalloc",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vaalloc {vaalloc.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    except KeyboardInterrupt:
        print(f"\nvaalloc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``vaalloc layout | head``): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
