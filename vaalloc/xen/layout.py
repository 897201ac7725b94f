"""Every constant of the Xen-on-ARM32 model, in one place.

The memory map is the one docs/design.md fixes for the model: Xen's image at 2M-10M and
the fixmap at 10M-12M (the layout of later Xen trees' ``config.h``), and the rest as in
Xen 4.3/4.4 (``xen/include/asm-arm/config.h`` and ``xen/arch/arm/mm.c`` at RELEASE-4.3.0),
the tree the xen-devel VLPT thread was written against, plus the one thing vaalloc adds:
the VLPT window in the hole Xen leaves unused between 128MB and 256MB.  Everything else
(slot indices, window capacity, loop address) is *derived* here from the map and the LPAE
geometry, so a port can check its own numbers against these expressions rather than
against the thread's, which were uncertain.

Hyp virtual address map (32-bit VA, HTTBR, three LPAE levels)::

    0x00000000 -   2M   unmapped
    0x00200000 -  10M   Xen text, data, bss          (xen_xenmap, 4KB pages)
    0x00A00000 -  12M   fixmap                        (xen_fixmap, 4KB pages)
    0x00C00000 -  14M   boot misc (FDT, relocation)
    0x02000000 - 128M   frametable
    0x08000000 - 256M   VLPT window    <- vaalloc     (xen_second[64..127])
    0x10000000 -   1G   vmap                          (xen_vmap allocator)
    0x40000000 -   2G   xenheap                       (2MB blocks)
    0x80000000 -   4G   domheap, per CPU              (xen_dommap, 1024 x 2MB)

Xen 4.3 itself put the image at 2M-4M and the fixmap at 4M-6M; the design's contract
wins here, and nothing in the VLPT design depends on what lies below 12MB.
"""

from __future__ import annotations

from typing import Final

from vaalloc.lpae.descriptor import AF, NG, S2AP_READ, S2AP_WRITE, SW_SHIFT, TABLE, VALID, XN

# --- LPAE geometry (4KB granule) -------------------------------------------------------------
PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
LPAE_SHIFT: Final = 9  # log2(entries per table)
LPAE_ENTRIES: Final = 1 << LPAE_SHIFT
LPAE_ENTRY_MASK: Final = LPAE_ENTRIES - 1
PTE_SIZE: Final = 8
THIRD_SHIFT: Final = PAGE_SHIFT  # 12: one level-3 entry maps 4KB
SECOND_SHIFT: Final = THIRD_SHIFT + LPAE_SHIFT  # 21: one level-2 entry maps 2MB
FIRST_SHIFT: Final = SECOND_SHIFT + LPAE_SHIFT  # 30: one level-1 entry maps 1GB
THIRD_SIZE: Final = 1 << THIRD_SHIFT
SECOND_SIZE: Final = 1 << SECOND_SHIFT
FIRST_SIZE: Final = 1 << FIRST_SHIFT
HYP_VA_BITS: Final = 32
HYP_VA_END: Final = 1 << HYP_VA_BITS

MB: Final = 1 << 20
GB: Final = 1 << 30

# --- The hyp virtual address map (docs/design.md; Xen 4.3 above 12MB) ---------------------
XEN_VIRT_START: Final = 0x0020_0000
XEN_VIRT_END: Final = 0x00A0_0000
FIXMAP_VIRT_START: Final = 0x00A0_0000
FIXMAP_VIRT_END: Final = 0x00C0_0000
BOOT_MISC_VIRT_START: Final = 0x00C0_0000
BOOT_MISC_VIRT_END: Final = 0x00E0_0000
FRAMETABLE_VIRT_START: Final = 0x0200_0000
FRAMETABLE_VIRT_END: Final = 0x0800_0000
VLPT_VIRT_START: Final = 0x0800_0000  # 128MB: the hole Xen leaves unused
VLPT_VIRT_END: Final = 0x1000_0000  # 256MB
VMAP_VIRT_START: Final = 0x1000_0000
VMAP_VIRT_END: Final = 0x4000_0000
XENHEAP_VIRT_START: Final = 0x4000_0000
XENHEAP_VIRT_END: Final = 0x8000_0000
DOMHEAP_VIRT_START: Final = 0x8000_0000
DOMHEAP_VIRT_END: Final = HYP_VA_END

# Fixmap slots (config.h)
FIXMAP_CONSOLE: Final = 0
FIXMAP_PT: Final = 1
FIXMAP_MISC: Final = 2

# --- Xen's own tables --------------------------------------------------------------------------
# xen_pgtable: one first-level page per CPU (HTTBR); only entries 0..3 are used (32-bit VA).
XEN_PGTABLE_USED: Final = HYP_VA_END >> FIRST_SHIFT  # 4
# xen_second: 4 contiguous pages = 2048 second-level entries; index = va >> SECOND_SHIFT.
# Pages 0-1 (0-2GB) are shared by every CPU; pages 2-3 became CPU0's xen_dommap in 4.3, and
# every other CPU gets its own DOMHEAP_SECOND_PAGES, so the domheap is per CPU.
XEN_SECOND_PAGES: Final = 4
XEN_SECOND_ENTRIES: Final = XEN_SECOND_PAGES * LPAE_ENTRIES  # 2048
XEN_SECOND_SHARED_PAGES: Final = DOMHEAP_VIRT_START >> FIRST_SHIFT  # 2
DOMHEAP_ENTRIES: Final = 1024  # 1024 2MB mapping slots
DOMHEAP_SECOND_PAGES: Final = (DOMHEAP_VIRT_END - DOMHEAP_VIRT_START) >> FIRST_SHIFT  # 2
DOMHEAP_REFCOUNT_MAX: Final = 0xF  # the 4 software ("avail") bits hold the reference count

# --- The VLPT window, derived ----------------------------------------------------------------
VLPT_SIZE: Final = VLPT_VIRT_END - VLPT_VIRT_START  # 128MB
VLPT_FIRST_SLOT: Final = VLPT_VIRT_START >> SECOND_SHIFT  # 64: xen_second index
VLPT_NR_SLOTS: Final = VLPT_SIZE >> SECOND_SHIFT  # 64 slots of 2MB
VLPT_END_SLOT: Final = VLPT_FIRST_SLOT + VLPT_NR_SLOTS  # 128 (exclusive)
# Every window slot lives in xen_second page 0 (indices 0..511), the page the loop points at.
VLPT_XEN_SECOND_PAGE: Final = VLPT_FIRST_SLOT >> LPAE_SHIFT  # 0
# The loop slot: the last slot of the window holds a table entry pointing at xen_second page 0.
# Read through it, xen_second page 0 is a level-3 table, so VA loop_va + s * 4KB maps the page
# that xen_second[s] points at: for a window slot s that is the domain's p2m level-2 page.
VLPT_LOOP_SLOT: Final = VLPT_END_SLOT - 1  # 127
VLPT_LOOP_VA: Final = VLPT_LOOP_SLOT << SECOND_SHIFT  # 0x0FE00000
VLPT_DOMAIN_SLOTS: Final = VLPT_NR_SLOTS - 1  # 63 slots (63GB of IPA) for domains
# One slot covers one p2m first-level entry: 1GB of IPA, seen as 2MB of leaf view
# (512 level-3 tables of 4KB) and 4KB of second-level view (one level-2 table).
VLPT_LEAF_VIEW_PER_SLOT: Final = SECOND_SIZE
VLPT_SECOND_VIEW_PER_SLOT: Final = PAGE_SIZE
IPA_PER_SLOT: Final = FIRST_SIZE

# --- Guests and their p2m (ARMv7 stage 2, 40-bit IPA) -----------------------------------------
GUEST_RAM_BASE: Final = 0x8000_0000  # IPA of guest RAM (Xen's GUEST_RAM_BASE on arm32)
P2M_IPA_BITS: Final = 40
P2M_ROOT_PAGES: Final = 2  # level-1 root of 1024 entries, two concatenated pages
P2M_ROOT_ENTRIES: Final = P2M_ROOT_PAGES * LPAE_ENTRIES
VTCR_VALUE: Final = 0x8000_3558  # T0SZ=-8 (40-bit), SL0=1 (start at level 1), WBWA, inner sh
MAX_VMID: Final = 255  # 8-bit VMID in ARMv7 VTTBR

# p2m types, kept in descriptor software bits 55..58 (Xen's p2m_type_t order, 4.4/4.5).
P2M_TYPE_SHIFT: Final = SW_SHIFT
P2M_TYPE_MASK: Final = 0xF << P2M_TYPE_SHIFT
P2M_INVALID: Final = 0
P2M_RAM_RW: Final = 1
P2M_RAM_RO: Final = 2
# Mainline arm32 never got a log-dirty type; vaalloc uses the first value Xen leaves free.
P2M_RAM_LOGDIRTY: Final = 7
# The type field as it stands in a descriptor (``desc & P2M_TYPE_MASK``) for the two types
# log-dirty flips between.
P2M_RW_TYPE_BITS: Final = P2M_RAM_RW << P2M_TYPE_SHIFT
P2M_LOGDIRTY_TYPE_BITS: Final = P2M_RAM_LOGDIRTY << P2M_TYPE_SHIFT

# --- Descriptors Xen writes (the bit names themselves live in vaalloc.lpae.descriptor) ----
P2M_PERM_MASK: Final = XN | S2AP_WRITE | S2AP_READ  # 0x00400000000000C0: compared on a fault

# Xen's p2m entries (p2m.c, mfn_to_p2m_entry): AF=1, SH=outer (0b10), read=1, MemAttr=0xF.
_P2M_COMMON: Final = AF | (0b10 << 8) | S2AP_READ | (0xF << 2) | VALID
# A p2m *table* entry is mfn_to_p2m_entry(mfn, MATTR_MEM, p2m_invalid): write=0, XN=1.
# Stage 2 ignores these attribute bits in a table descriptor, but Xen's hyp walker reads the
# same bits when the descriptor is seen as a level-3 page through the VLPT: MemAttr 0xF reads as
# AttrIndx=7 (WRITEALLOC) and NS=1, S2AP read reads as AP[1]=1 (as Xen's own mappings), S2AP
# write=0 reads as AP[2]=0 (writable), AF=1, XN=1. So the view is a normal Xen data mapping.
P2M_TABLE_ATTRS: Final = _P2M_COMMON | TABLE | XN
# A RAM leaf (page at L3, 0b11; block at L2, 0b01) of type ram_rw: read/write, executable.
P2M_RAM_RW_ATTRS: Final = _P2M_COMMON | S2AP_WRITE | P2M_RW_TYPE_BITS
# The same leaf while log-dirty tracks it and it is clean: write-protected, type ram_logdirty.
P2M_RAM_LOGDIRTY_ATTRS: Final = _P2M_COMMON | P2M_LOGDIRTY_TYPE_BITS

# Xen's own mappings (page.h, mfn_to_xen_entry): XN, nG, AF, SH=outer, NS, AP[1]=1, WRITEALLOC.
XEN_ENTRY_ATTRS: Final = XN | NG | AF | (0b10 << 8) | (1 << 6) | (1 << 5) | (0b111 << 2) | VALID
XEN_TABLE_ATTRS: Final = XEN_ENTRY_ATTRS | TABLE  # links and 4KB pages set bit 1 too
DOMHEAP_AVAIL_SHIFT: Final = SW_SHIFT  # pt.avail: the refcount of a domheap slot
