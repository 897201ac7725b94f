"""ARM long-descriptor (LPAE / VMSAv8-64) translation: formats, descriptors, memory, tables,
walks, and an MMU with a TLB.  See docs/lpae.md for the model and its limits."""

from __future__ import annotations

from vaalloc.lpae.descriptor import S1Attrs, S1Descriptor, S2Attrs, S2Descriptor
from vaalloc.lpae.geometry import (
    AARCH64_S1_48,
    AARCH64_S1_48_EL2,
    AARCH64_S2_PA_RANGES,
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    Format,
    aarch64_s1,
    aarch64_s2,
    armv7_s2,
)
from vaalloc.lpae.memory import PhysicalMemory
from vaalloc.lpae.mmu import MMU, TLBI_OPS, StaleHit
from vaalloc.lpae.table import PageTable
from vaalloc.lpae.tlb import TLB
from vaalloc.lpae.walk import Fault, FaultError, Translation, walk_two_stage

__all__ = [
    "AARCH64_S1_48",
    "AARCH64_S1_48_EL2",
    "AARCH64_S2_PA_RANGES",
    "ARMV7_S1",
    "ARMV7_S1_PL1",
    "ARMV7_S2_40",
    "MMU",
    "TLB",
    "TLBI_OPS",
    "Fault",
    "FaultError",
    "Format",
    "PageTable",
    "PhysicalMemory",
    "S1Attrs",
    "S1Descriptor",
    "S2Attrs",
    "S2Descriptor",
    "StaleHit",
    "Translation",
    "aarch64_s1",
    "aarch64_s2",
    "armv7_s2",
    "walk_two_stage",
]
