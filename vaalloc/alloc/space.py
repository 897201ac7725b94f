"""Named allocator instances that share one address space and must not overlap.

Xen's own virtual address space on ARM32 is the example: the VMAP region, the VLPT window and
the xenheap are separate allocators over disjoint ranges.  :class:`AddressSpace` refuses an
instance whose range overlaps one already registered, finds instances by name or by address, and
:meth:`AddressSpace.owner` descends through carved children to the instance that manages an
address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from sortedcontainers import SortedDict

from vaalloc.alloc.allocator import RangeAllocator
from vaalloc.alloc.errors import NameConflict, UnknownName
from vaalloc.alloc.policies import FIRST_FIT
from vaalloc.errors import RangeError

__all__ = ["AddressSpace"]


class AddressSpace:
    """A registry of non-overlapping :class:`RangeAllocator` instances of one address space.

    Lookups by address cost O(log k) in the number of instances.  Thread-safe (one lock).
    """

    def __init__(self, name: str = "address-space") -> None:
        if not isinstance(name, str):
            raise RangeError(f"address space name must be a str, got {name!r}")
        self._name = name
        self._lock = threading.Lock()
        self._by_start: SortedDict = SortedDict()  # start -> instance
        self._by_name: dict[str, RangeAllocator] = {}

    @property
    def name(self) -> str:
        """The space's name, used in error messages."""
        return self._name

    def create(
        self,
        start: int,
        end: int,
        name: str,
        *,
        granule: int = 4096,
        policy: str = FIRST_FIT,
        guard: bool = True,
    ) -> RangeAllocator:
        """Build a :class:`RangeAllocator` over ``[start, end)`` and register it.

        Raises: as the constructor, and as :meth:`add`.
        """
        return self.add(RangeAllocator(start, end, granule, policy, guard, name))

    def create_xen_vmap(
        self, start: int, end: int, name: str = "vmap", *, granule: int = 4096
    ) -> RangeAllocator:
        """Build a :meth:`RangeAllocator.xen_vmap` instance and register it."""
        return self.add(RangeAllocator.xen_vmap(start, end, granule, name))

    def add(self, allocator: RangeAllocator) -> RangeAllocator:
        """Register an existing instance and return it.  O(log k).

        Raises:
            RangeError: ``allocator`` is not a RangeAllocator, was released to its parent, or
                its range overlaps a registered instance's (both are named in the message).
            NameConflict: an instance of the same name is registered.
        """
        if not isinstance(allocator, RangeAllocator):
            raise RangeError(f"{self._name}: cannot register {allocator!r}")
        if allocator.released:
            raise RangeError(
                f"{self._name}: {allocator.name!r} was released to its parent; it manages nothing"
            )
        with self._lock:
            if allocator.name in self._by_name:
                raise NameConflict(f"{self._name}: an instance named {allocator.name!r} exists")
            clash = self._overlapping(allocator.start, allocator.end)
            if clash is not None:
                raise RangeError(
                    f"{self._name}: {allocator.name!r} [{allocator.start:#x}, "
                    f"{allocator.end:#x}) overlaps {clash.name!r} "
                    f"[{clash.start:#x}, {clash.end:#x})"
                )
            self._by_start[allocator.start] = allocator
            self._by_name[allocator.name] = allocator
            return allocator

    def _overlapping(self, start: int, end: int) -> RangeAllocator | None:
        i = self._by_start.bisect_right(start)
        if i:
            below: RangeAllocator = self._by_start.peekitem(i - 1)[1]
            if below.end > start:
                return below
        if i < len(self._by_start):
            above: RangeAllocator = self._by_start.peekitem(i)[1]
            if above.start < end:
                return above
        return None

    def remove(self, name: str) -> RangeAllocator:
        """Unregister the instance called ``name`` and return it.  Raises UnknownName."""
        with self._lock:
            allocator = self._by_name.pop(name, None)
            if allocator is None:
                raise UnknownName(f"{self._name}: no instance named {name!r}")
            del self._by_start[allocator.start]
            return allocator

    def __getitem__(self, name: str) -> RangeAllocator:
        """The instance called ``name``.  Raises UnknownName (RangeError for a name that is
        not a str)."""
        if not isinstance(name, str):
            raise RangeError(f"{self._name}: an instance name is a str, not {name!r}")
        with self._lock:
            allocator = self._by_name.get(name)
        if allocator is None:
            raise UnknownName(f"{self._name}: no instance named {name!r}")
        return allocator

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._lock:
            return name in self._by_name

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name)

    def __iter__(self) -> Iterator[RangeAllocator]:
        """Registered instances by ascending start address."""
        with self._lock:
            items = list(self._by_start.values())
        return iter(items)

    def lookup(self, addr: int) -> RangeAllocator | None:
        """The registered instance whose range holds ``addr``, or None.  O(log k)."""
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise RangeError(f"{self._name}: address must be an int, got {addr!r}")
        with self._lock:
            i = self._by_start.bisect_right(addr)
            if not i:
                return None
            allocator: RangeAllocator = self._by_start.peekitem(i - 1)[1]
        return allocator if addr < allocator.end else None

    def owner(self, addr: int) -> RangeAllocator | None:
        """The innermost instance managing ``addr``: the registered one, then down through
        carved children that hold it.  O(log k + depth * c) for c children per level."""
        current = self.lookup(addr)
        while current is not None:
            inner = next((c for c in current.children() if c.start <= addr < c.end), None)
            if inner is None:
                return current
            current = inner
        return None

    def __repr__(self) -> str:
        return f"AddressSpace({self._name!r}, {len(self)} instances)"
