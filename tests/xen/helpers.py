"""Helpers shared by the Xen model tests."""

from __future__ import annotations

from typing import Any

from vaalloc.xen import Xen
from vaalloc.xen import layout as L


def state(xen: Xen) -> dict[str, Any]:
    """Everything a failed call must leave unchanged, in comparable form."""
    return {
        "frames": xen.mem.frames_in_use,
        "allocated": list(xen.mem.allocated()),
        "xen_second": [xen.pagetables.read_second(i) for i in range(L.LPAE_ENTRIES)],
        "window": list(xen.vlpt.window.allocations()),
        "runs": dict(xen.vlpt.runs),
        "domains": {
            d.domid: (d.logdirty, sorted(d.dirty), list(d.stage2.leaves()))
            for d in xen.domains.values()
        },
        "current": list(xen.current),
    }
