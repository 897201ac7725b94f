"""A differential state machine: fuzz your allocator port against vaalloc's ``RangeAllocator``.

Subclass :class:`DifferentialAllocatorMachine`, name the policy (``"xen_vmap"`` or one of
``"first-fit"``, ``"best-fit"``, ``"instant-fit"``) and return an adapter around your port
from :meth:`~DifferentialAllocatorMachine.make_adapter`::

    class MyVmap(DifferentialAllocatorMachine):
        policy = "xen_vmap"

        def make_adapter(self, region):
            return MyCtypesVmap(region.start, region.end, region.granule)

    TestMyVmap = MyVmap.TestCase            # pytest / unittest collect it

Hypothesis then drives random allocs and frees (regions, sizes and alignments from
:mod:`vaalloc.testing.strategies`); after every step the port's answer must equal vaalloc's:
the address (or the refusal), the granules a free returns, refusals of bad frees, and, for
``xen_vmap`` when the adapter has ``vm_low``/``vm_top`` attributes, Xen's two hints.  The first
difference raises :class:`PortMismatch` with the whole trace that led to it; hypothesis shrinks
the trace and prints the minimal one as Python calls.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import hypothesis.strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    multiple,
    rule,
)

from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvalidFree, OutOfSpace, RangeError
from vaalloc.testing.strategies import XEN_VMAP, Region, alignments, regions, request_sizes

__all__ = [
    "POLICIES",
    "AllocatorAdapter",
    "DifferentialAllocatorMachine",
    "PortMismatch",
    "RunStats",
    "reference_allocator",
]

POLICIES = ("first-fit", "best-fit", "instant-fit", XEN_VMAP)


@runtime_checkable
class AllocatorAdapter(Protocol):
    """What a port must offer (a few lines of ctypes or PyO3 glue around it).

    ``alloc(nr, align)``: ``nr`` granules aligned to ``align`` granules; the byte address of
    the first, or None when the port refuses (out of space).  ``free(address)``: the granules
    freed, or 0 when the port refuses (``address`` does not start a live allocation).
    An optional ``close()`` is called when an example ends.
    """

    def alloc(self, nr: int, align: int) -> int | None: ...

    def free(self, address: int) -> int: ...


class PortMismatch(AssertionError):
    """The port and vaalloc disagreed; the message holds the step and the trace before it."""


class RunStats:
    """Counters a campaign attaches to a machine class (see :mod:`vaalloc.testing.fuzz`)."""

    def __init__(self) -> None:
        self.examples = 0
        self.steps = 0
        self.first_failure_at: int | None = None  # examples run when the first mismatch hit

    def record_failure(self) -> None:
        """Remember how many examples it took to find the first mismatch."""
        if self.first_failure_at is None:
            self.first_failure_at = self.examples + 1


def reference_allocator(policy: str, region: Region) -> RangeAllocator:
    """vaalloc's allocator for ``policy`` over ``region``: the oracle (guard granules on)."""
    if policy == XEN_VMAP:
        return RangeAllocator.xen_vmap(region.start, region.end, region.granule, name="oracle")
    return RangeAllocator(region.start, region.end, region.granule, policy, True, name="oracle")


class DifferentialAllocatorMachine(RuleBasedStateMachine):
    """Base class: every alloc and free is made on your port and on vaalloc, and compared.

    Class attributes a subclass may set:

    * ``policy``: ``"xen_vmap"`` (default) or a generic policy name (guard granules on);
    * ``max_granules``: the largest region drawn (default 400; keep it small: hypothesis finds
      exhaustion and the last granule much faster in small regions);
    * ``check_refusals``: also free addresses that start no live run and expect 0 (default
      True; set False if your port asserts on a bad free).

    Override :meth:`make_adapter`.  Defining a subclass with an unknown ``policy`` raises
    :class:`~vaalloc.errors.RangeError`.  The rules are built per subclass from these attributes
    (``__init_subclass__``), so the printed reproducer reads
    ``state.alloc(nr=3, align=1)``, ``state.free(address=addresses_0)``;
    ``state.alloc_exact(hole=1, slack=0)`` asks for exactly what the second free hole holds
    (plus ``slack``), the size shown in the trace.
    """

    policy: ClassVar[str] = XEN_VMAP
    max_granules: ClassVar[int] = 400
    check_refusals: ClassVar[bool] = True
    run_stats: ClassVar[RunStats | None] = None

    addresses = Bundle("addresses")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.policy not in POLICIES:
            raise RangeError(f"{cls.__name__}.policy={cls.policy!r}: expected one of {POLICIES}")

        # Rules are thin named wrappers so the reproducer reads state.alloc(nr=..., align=...).
        def setup(self: DifferentialAllocatorMachine, region: Region) -> None:
            self._setup(region)

        def alloc(self: DifferentialAllocatorMachine, nr: int, align: int) -> object:
            return self._alloc(nr, align)

        def alloc_exact(self: DifferentialAllocatorMachine, hole: int, slack: int) -> object:
            return self._alloc_exact(hole, slack)

        def free(self: DifferentialAllocatorMachine, address: int) -> None:
            self._free(address)

        def free_not_a_run(self: DifferentialAllocatorMachine, offset: int) -> None:
            self._free_not_a_run(offset)

        sizes = request_sizes(cls.max_granules)
        cls.setup = initialize(region=regions(cls.policy, cls.max_granules))(setup)
        cls.alloc = rule(target=cls.addresses, nr=sizes, align=alignments(cls.policy))(alloc)
        cls.alloc_exact = rule(
            target=cls.addresses, hole=st.integers(0, 8), slack=st.sampled_from([0, 1, -1])
        )(alloc_exact)
        cls.free = rule(address=consumes(cls.addresses))(free)
        if cls.check_refusals:
            offsets = st.integers(-2, cls.max_granules + 2)
            cls.free_not_a_run = rule(offset=offsets)(free_not_a_run)

    # -- to override --------------------------------------------------------------------------

    def make_adapter(self, region: Region) -> AllocatorAdapter:
        """Return a fresh instance of the port over ``region`` (``start``, ``end`` in bytes,
        ``granule`` in bytes).  Called once per example."""
        raise NotImplementedError(f"{type(self).__name__} must override make_adapter(region)")

    # -- machinery ----------------------------------------------------------------------------

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[str] = []
        self.steps = 0
        self.port: AllocatorAdapter | None = None
        self.oracle: RangeAllocator | None = None

    def _setup(self, region: Region) -> None:
        self.region = region
        self.oracle = reference_allocator(self.policy, region)
        self.port = self.make_adapter(region)
        self.trace.append(
            f"region [{region.start:#x}, {region.end:#x}) granule {region.granule:#x} "
            f"({region.granules} granules), policy {self.policy}"
        )
        self._compare_hints("setup")

    def _mismatch(self, what: str) -> PortMismatch:
        if self.run_stats is not None:
            self.run_stats.record_failure()
        steps = "\n".join(f"  {i}: {line}" for i, line in enumerate(self.trace))
        return PortMismatch(f"{what}\ntrace:\n{steps}")

    def _compare_hints(self, step: str) -> None:
        """Xen's vm_low/vm_top, when the port exposes them (xen_vmap only)."""
        if self.policy != XEN_VMAP or self.oracle is None:
            return
        port: Any = self.port
        if not (hasattr(port, "vm_low") and hasattr(port, "vm_top")):
            return
        want = (self.oracle.vm_low, self.oracle.vm_top)
        got = (int(port.vm_low), int(port.vm_top))
        if got != want:
            raise self._mismatch(
                f"after {step}: port has vm_low={got[0]} vm_top={got[1]}, "
                f"vaalloc has vm_low={want[0]} vm_top={want[1]}"
            )

    def _alloc(self, nr: int, align: int) -> object:
        assert self.oracle is not None and self.port is not None
        self.steps += 1
        try:
            want: int | None = self.oracle.alloc(nr, align)
        except OutOfSpace:
            want = None
        got = self.port.alloc(nr, align)
        step = f"alloc(nr={nr}, align={align})"
        self.trace.append(f"{step} -> {_show(want)}")
        if got != want:
            raise self._mismatch(f"{step}: port returned {_show(got)}, vaalloc {_show(want)}")
        self._compare_hints(step)
        return multiple() if want is None else want

    def _holes(self) -> list[tuple[int, int]]:
        """Free intervals ``[s, e)`` in granules from the region's start, as vaalloc sees them
        (for xen_vmap the bitmap's own pages at the bottom count as used)."""
        assert self.oracle is not None
        g, base = self.region.granule, self.region.start
        lo = 0
        if self.policy == XEN_VMAP:
            lo = ((self.region.granules + 7) // 8 + g - 1) // g  # PFN_UP(DIV_ROUND_UP(bits, 8))
        holes, cursor = [], lo
        for va, nr in self.oracle.allocations():
            u = (va - base) // g
            if u > cursor:
                holes.append((cursor, u))
            cursor = u + nr
        if cursor < self.region.granules:
            holes.append((cursor, self.region.granules))
        return holes

    def _alloc_exact(self, hole: int, slack: int) -> object:
        """Ask for exactly what one hole holds, plus ``slack`` (-1, 0 or 1) granules.

        Holes are counted between vaalloc's live runs; what a hole holds is its length less
        a guard granule at each side that has a neighbour (xen_vmap: always one before, and
        one after unless the hole ends the region).  Exact fits and one-too-many are where
        fit tests go wrong (``<`` against ``<=``), and random sizes almost never hit them."""
        holes = self._holes()
        if not holes:
            return multiple()
        s, e = holes[hole % len(holes)]
        end = self.region.granules
        guards = 1 + (e != end) if self.policy == XEN_VMAP else (s != 0) + (e != end)
        nr = e - s - guards + slack
        if nr < 1:
            return multiple()
        return self._alloc(nr, 1)

    def _free(self, address: int) -> None:
        assert self.oracle is not None and self.port is not None
        self.steps += 1
        want = self.oracle.free(address)
        got = self.port.free(address)
        step = f"free({address:#x})"
        self.trace.append(f"{step} -> {want} granules")
        if got != want:
            raise self._mismatch(f"{step}: port freed {got} granules, vaalloc {want}")
        self._compare_hints(step)

    def _free_not_a_run(self, offset: int) -> None:
        assert self.oracle is not None and self.port is not None
        address = self.region.start + offset * self.region.granule
        live = {va for va, _ in self.oracle.allocations()}
        if address in live or address < 0:
            return
        self.steps += 1
        try:
            self.oracle.free(address)
        except InvalidFree:
            pass
        else:  # pragma: no cover - vaalloc refuses every address not in `live`
            raise AssertionError(f"vaalloc freed {address:#x}, which starts no live run")
        got = self.port.free(address)
        step = f"free({address:#x}) [starts no live run]"
        self.trace.append(f"{step} -> refused")
        if got != 0:
            raise self._mismatch(f"{step}: port freed {got} granules, vaalloc refused")
        self._compare_hints(step)

    def teardown(self) -> None:
        """Close the port (if it has ``close()``) and count the example for campaigns."""
        close = getattr(self.port, "close", None)
        if callable(close):
            close()
        if self.run_stats is not None:
            self.run_stats.examples += 1
            self.run_stats.steps += self.steps


def _show(address: int | None) -> str:
    return "refused" if address is None else f"{address:#x}"
