"""Argument checks shared by the public boundaries of :mod:`vaalloc.lpae` and :mod:`vaalloc.xen`.

One wording everywhere: the call, the argument's name, its value (addresses in hex), and what
was expected.  A bool is never accepted where an int is meant (``True`` is an int to Python,
but a flag passed as a size or an address is a bug), and only a bool where a flag is meant.
"""

from __future__ import annotations

from vaalloc.errors import RangeError

__all__: list[str] = []


def shown(value: object) -> str:
    """``value`` for an error message: hex for an int, ``repr`` for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}"
    return repr(value)


def check_int(
    value: object,
    what: str,
    name: str,
    lo: int | None = None,
    hi: int | None = None,
) -> int:
    """``value`` if it is an int (not a bool) in ``[lo, hi)`` (either bound optional), else
    RangeError naming ``what`` (the call), ``name`` and the value."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise RangeError(f"{what}: {name}={shown(value)} is not an integer")
    if (lo is not None and value < lo) or (hi is not None and value >= hi):
        if hi is None:
            expected = f"at least {lo:#x}"
        elif lo is None:
            expected = f"below {hi:#x}"
        else:
            expected = f"in [{lo:#x}, {hi:#x})"
        raise RangeError(f"{what}: {name}={shown(value)} must be {expected}")
    return value


def check_bool(value: object, what: str, name: str) -> bool:
    """``value`` if it is a bool, else RangeError naming the call, the argument and the value."""
    if not isinstance(value, bool):
        raise RangeError(f"{what}: {name}={value!r} is not a bool")
    return value
