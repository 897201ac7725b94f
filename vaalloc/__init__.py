"""vaalloc: model virtual-address-range allocation and ARM LPAE page tables.

The package is layered; each layer imports only those below it (bottom first):

* :mod:`vaalloc.errors` -- the exception hierarchy.
* :mod:`vaalloc.alloc` -- the generic bitmap-backed range allocator.
* :mod:`vaalloc.lpae` -- descriptors, page tables, walks, MMU and TLB.
* :mod:`vaalloc.xen` -- the Xen-on-ARM32 model: vmap, p2m, VLPT, log-dirty.
* :mod:`vaalloc.vectors`, :mod:`vaalloc.testing`, :mod:`vaalloc.studies`, :mod:`vaalloc.replay`
  -- golden vectors, the fuzzing kit, the studies on the Xen model, real traces replayed.
* :mod:`vaalloc.cli` -- the ``vaalloc`` command.

The names re-exported here belong to the conformance surface described in docs/design.md.
"""

from __future__ import annotations

from vaalloc.alloc import AddressSpace, AllocStats, RangeAllocator
from vaalloc.errors import (
    AlignmentError,
    InvalidFree,
    InvariantError,
    LogDirtyError,
    MappingError,
    OutOfSpace,
    RangeError,
    SnapshotError,
    VAAllocError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AddressSpace",
    "AlignmentError",
    "AllocStats",
    "InvalidFree",
    "InvariantError",
    "LogDirtyError",
    "MappingError",
    "OutOfSpace",
    "RangeAllocator",
    "RangeError",
    "SnapshotError",
    "VAAllocError",
    "__version__",
]
