"""The generic range allocator (``vaalloc.alloc``).

One :class:`RangeAllocator` hands out runs of granules from a range ``[start, end)`` with a
chosen policy and constraints; :meth:`RangeAllocator.xen_vmap` builds one that places exactly as
Xen's ``vm_alloc`` (a :class:`~vaalloc.alloc.xenvmap.XenVmapAllocator`);
:class:`~vaalloc.alloc.linuxvmalloc.LinuxVmalloc` places as Linux's ``alloc_vmap_area``, lazy
frees included; :class:`AddressSpace` keeps the named instances of one address space from
overlapping.  See docs/allocator.md.
"""

from __future__ import annotations

from vaalloc.alloc.allocator import SNAPSHOT_FORMAT, AllocStats, RangeAllocator
from vaalloc.alloc.errors import InUse, NameConflict, UnknownName, Unsupported
from vaalloc.alloc.linuxvmalloc import LINUX_VMALLOC, LinuxVmalloc
from vaalloc.alloc.policies import BEST_FIT, FIRST_FIT, INSTANT_FIT, POLICIES, XEN_VMAP
from vaalloc.alloc.space import AddressSpace

# Imported for its registration too: RangeAllocator.xen_vmap() builds this class.
from vaalloc.alloc.xenvmap import XenVmapAllocator

__all__ = [
    "BEST_FIT",
    "FIRST_FIT",
    "INSTANT_FIT",
    "LINUX_VMALLOC",
    "POLICIES",
    "SNAPSHOT_FORMAT",
    "XEN_VMAP",
    "AddressSpace",
    "AllocStats",
    "InUse",
    "LinuxVmalloc",
    "NameConflict",
    "RangeAllocator",
    "UnknownName",
    "Unsupported",
    "XenVmapAllocator",
]
