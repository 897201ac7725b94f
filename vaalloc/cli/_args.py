"""Argument types shared by the sub-commands (they raise argparse errors: one line, status 2)."""

from __future__ import annotations

import argparse

__all__ = ["integer", "positive"]


def integer(text: str) -> int:
    """Parse a decimal or 0x-prefixed integer option."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive(text: str) -> int:
    """Parse a strictly positive integer option."""
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value
