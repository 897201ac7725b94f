"""Argument types shared by the sub-commands (they raise argparse errors: one line, status 2)."""

from __future__ import annotations

import argparse

__all__ = ["integer", "parse_size", "positive"]


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


_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse a byte count: an integer (``0x`` hex allowed) with an optional binary suffix
    ``K``, ``M``, ``G`` or ``T`` (``KB``/``KiB`` spellings too), e.g. ``2G``, ``512M``,
    ``1.5G``.  Raises ``argparse.ArgumentTypeError`` (one line, status 2) otherwise."""
    body = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = body[-1:] if body[-1:] in _SUFFIXES else ""
    number = body[: len(body) - len(unit)] if unit else body
    try:
        value = float(number) if "." in number else int(number, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 512M)") from None
    size = int(value * _SUFFIXES[unit])
    if size <= 0 or size != value * _SUFFIXES[unit]:
        raise argparse.ArgumentTypeError(f"not a positive whole number of bytes: {text!r}")
    return size
