"""The argument vocabulary every sub-command shares, and the help formatter that shows it.

One spelling per kind of value, whatever the sub-command:

* a **size** is bytes, or a number with a binary suffix ``K``, ``M``, ``G`` or ``T`` (``KB``,
  ``KiB`` too): ``2G``, ``512M``, ``0x1000``, ``1.5G``.  Printed back in the largest exact unit
  (:func:`format_size`: ``10T``, never ``10485760MB``);
* a **fraction** is a number from 0 to 1;
* a **seed** is a non-negative integer (``random.Random(-1)`` is ``random.Random(1)``, so a
  negative seed would silently repeat another run);
* a **count** is an integer with a floor and, where a larger value would only mean hours of
  work or a limit of the modelled hardware, a cap: past it the error says what the cap is and
  why;
* an **address** is a non-negative integer, hex with ``0x``, printed in hex;
* a **list** is comma-separated items of one of the kinds above.

Each kind is a callable argparse ``type`` that raises ``argparse.ArgumentTypeError`` (argparse
prints ``vaalloc CMD: error: argument --OPT: MESSAGE`` and exits with status 2, before any
work starts) and has a ``show(value)`` that :class:`HelpFormatter` uses to print defaults in
the same spelling the option accepts.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import attrs

__all__ = [
    "SEED",
    "Address",
    "Choice",
    "Count",
    "HelpFormatter",
    "ListOf",
    "Number",
    "Size",
    "add_command",
    "add_domains",
    "add_ram",
    "add_seed",
    "add_superpages",
    "format_size",
    "fraction",
    "integer",
    "parse_size",
    "positive",
]

T = TypeVar("T")

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_UNITS = (("T", 40), ("G", 30), ("M", 20), ("K", 10))


def format_size(size: int) -> str:
    """``size`` bytes in the largest unit that divides it exactly: ``10T``, ``64M``, ``4K``,
    ``100B``; the spelling :func:`parse_size` reads back."""
    for unit, shift in _UNITS:
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size}B"


def integer(text: str) -> int:
    """Parse a decimal or 0x-prefixed integer (``_`` separators allowed)."""
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive(text: str) -> int:
    """Parse a strictly positive integer."""
    return Count(minimum=1)(text)


def parse_size(text: str) -> int:
    """Parse a positive byte count: an integer (``0x`` hex allowed) with an optional binary
    suffix ``K``, ``M``, ``G`` or ``T`` (``KB``/``KiB`` spellings too), e.g. ``2G``, ``512M``,
    ``1.5G``.  Raises ``argparse.ArgumentTypeError`` otherwise."""
    body = text.strip().upper()
    if body.endswith("IB"):
        body = body[:-2]
    elif body.endswith("B") and not body.startswith("0X"):
        body = body[:-1]
    unit = body[-1:] if body[-1:] in _SUFFIXES and not body.startswith("0X") else ""
    number = body[: len(body) - len(unit)] if unit else body
    try:
        value: float = float(number) if "." in number else int(number, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 512M, 4096)") from None
    scaled = value * _SUFFIXES[unit]
    if not math.isfinite(scaled) or scaled <= 0 or scaled != int(scaled):
        raise argparse.ArgumentTypeError(f"not a positive whole number of bytes: {text!r}")
    return int(scaled)


@attrs.frozen
class Size:
    """A size option: ``multiple`` (and ``maximum``) in bytes, ``why`` explains the limits."""

    multiple: int = 1
    maximum: int | None = None
    why: str = ""

    def __call__(self, text: str) -> int:
        size = parse_size(text)
        reason = f" ({self.why})" if self.why else ""
        if size % self.multiple:
            raise argparse.ArgumentTypeError(
                f"{text} is not a multiple of {format_size(self.multiple)}{reason}"
            )
        if self.maximum is not None and size > self.maximum:
            raise argparse.ArgumentTypeError(
                f"{text} is more than {format_size(self.maximum)}{reason}"
            )
        return size

    def show(self, value: int) -> str:
        """The spelling of ``value`` in help and messages."""
        return format_size(value)


@attrs.frozen
class Count:
    """An integer option from ``minimum`` to ``maximum``; ``why`` says why the cap is there."""

    minimum: int = 1
    maximum: int | None = None
    why: str = ""

    def __call__(self, text: str) -> int:
        value = integer(text)
        if value < self.minimum:
            word = "positive" if self.minimum == 1 else f"at least {self.minimum}"
            if self.minimum == 0:
                word = "non-negative"
            raise argparse.ArgumentTypeError(f"must be {word}: {text!r}")
        if self.maximum is not None and value > self.maximum:
            reason = f" ({self.why})" if self.why else ""
            raise argparse.ArgumentTypeError(f"{text} is more than {self.maximum}{reason}")
        return value

    def show(self, value: int) -> str:
        """The spelling of ``value`` in help."""
        return str(value)


#: A random seed: any non-negative integer.
SEED = Count(minimum=0)


@attrs.frozen
class Address:
    """A byte address (non-negative integer), aligned to ``align``; shown in hex."""

    align: int = 1
    maximum: int | None = None

    def __call__(self, text: str) -> int:
        value = integer(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"an address is non-negative: {text!r}")
        if value % self.align:
            raise argparse.ArgumentTypeError(
                f"{value:#x} is not a multiple of {format_size(self.align)}"
            )
        if self.maximum is not None and value > self.maximum:
            raise argparse.ArgumentTypeError(f"{value:#x} is above {self.maximum:#x}")
        return value

    def show(self, value: int) -> str:
        """Hex, as every address the command prints."""
        return f"{value:#x}"


@attrs.frozen
class Number:
    """A real-number option: above ``above`` (strictly), at most ``maximum``."""

    above: float = 0.0
    maximum: float | None = None
    why: str = ""

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or not value > self.above:
            word = "positive" if self.above == 0 else f"more than {self.above:g}"
            raise argparse.ArgumentTypeError(f"must be {word}: {text!r}")
        if self.maximum is not None and value > self.maximum:
            reason = f" ({self.why})" if self.why else ""
            raise argparse.ArgumentTypeError(f"{text} is more than {self.maximum:g}{reason}")
        return value

    def show(self, value: float) -> str:
        """The spelling of ``value`` in help."""
        return f"{value:g}"


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1: {text!r}")
    return value


@attrs.frozen
class _Fraction:
    def __call__(self, text: str) -> float:
        return _fraction(text)

    def show(self, value: float) -> str:
        return f"{value:g}"


#: A share: a number from 0 to 1.
fraction = _Fraction()


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


@attrs.frozen
class Choice:
    """One of ``names`` (a list option uses it per item; argparse ``choices`` does the rest)."""

    names: tuple[str, ...] = attrs.field(converter=_names)
    what: str = "value"

    def __call__(self, text: str) -> str:
        name = text.strip()
        if name not in self.names:
            raise argparse.ArgumentTypeError(
                f"unknown {self.what} {name!r}; choose from {', '.join(self.names)}"
            )
        return name

    def show(self, value: str) -> str:
        """The name itself."""
        return value


@attrs.frozen
class ListOf(Generic[T]):
    """A comma-separated list of ``item`` values (at least one)."""

    item: Callable[[str], T]

    def __call__(self, text: str) -> list[T]:
        parts = [p.strip() for p in text.split(",")]
        if not any(parts):
            raise argparse.ArgumentTypeError(f"empty list: {text!r}")
        out = []
        for part in parts:
            if not part:
                raise argparse.ArgumentTypeError(f"empty item in {text!r}")
            try:
                out.append(self.item(part))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None
        return out

    def show(self, value: Sequence[T]) -> str:
        """Items joined with commas, each in its own spelling."""
        show = getattr(self.item, "show", str)
        return ",".join(show(v) for v in value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every default in the spelling the option accepts (``2G``, ``0x10000000``,
    ``10,100,1000``), keeps the description and the epilog as written (tables, legends), and
    leaves flags (``store_true``) and options without a default alone.  Lines break at
    spaces only, never inside a name such as ``switched-lazy`` or ``0x10000000``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or action.nargs == 0
        ):
            return text
        show: Callable[[Any], str] = getattr(action.type, "show", str)
        if isinstance(default, list) and not isinstance(action.type, ListOf):
            shown = " ".join(show(v) for v in default)
        else:
            shown = show(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A sub-command parser with :class:`HelpFormatter`: ``help`` is its line in
    ``vaalloc --help``; ``description`` (paragraphs separated by blank lines, wrapped here)
    heads its own ``--help``; ``epilog`` (a legend, printed as written) ends it."""
    paragraphs = [" ".join(p.split()) for p in textwrap.dedent(description).split("\n\n")]
    wrapped = "\n\n".join(textwrap.fill(p, 79) for p in paragraphs if p)
    return sub.add_parser(
        name,
        help=help,
        description=wrapped,
        epilog=textwrap.dedent(epilog).strip("\n") if epilog else None,
        formatter_class=HelpFormatter,
    )


# Options that describe the modelled guests, shared by the sub-commands that build them: one
# statement of each limit of the model (and its reason) whatever the command.


def add_seed(p: argparse.ArgumentParser, default: int, what: str = "random seed") -> None:
    """``--seed N``: a :data:`SEED` with ``default``; ``what`` heads its help line."""
    p.add_argument("--seed", type=SEED, default=default, metavar="N", help=f"{what} (non-negative)")


def add_domains(p: argparse.ArgumentParser, default: int, help: str) -> None:
    """``--domains N``: guests, from 1 to the ARMv7 VMID limit."""
    from vaalloc.xen.layout import MAX_VMID

    p.add_argument(
        "--domains",
        type=Count(1, MAX_VMID, "an ARMv7 VMID has 8 bits"),
        default=default,
        metavar="N",
        help=help,
    )


def add_ram(p: argparse.ArgumentParser, default: int, examples: str) -> None:
    """``--ram SIZE``: RAM per guest, a 2MB multiple that fits between the guest RAM base and
    the top of the 40-bit IPA space; ``examples`` shows two spellings in the help."""
    from vaalloc.xen.layout import GUEST_RAM_BASE, P2M_IPA_BITS

    ram_max = (1 << P2M_IPA_BITS) - GUEST_RAM_BASE
    p.add_argument(
        "--ram",
        type=Size(2 << 20, ram_max, "guest RAM is 2M-aligned, from IPA 0x80000000 to 2^40"),
        default=default,
        metavar="SIZE",
        help=f"RAM per guest, e.g. {examples}",
    )


def add_superpages(p: argparse.ArgumentParser, default: float) -> None:
    """``--superpages [SHARE]``: the share of guest RAM mapped by 2MB p2m blocks (alone: 1)."""
    p.add_argument(
        "--superpages",
        type=fraction,
        nargs="?",
        const=1.0,
        default=default,
        metavar="SHARE",
        help="share of guest RAM mapped with 2M p2m blocks (alone: 1, all of it)",
    )
