"""Long-descriptor (LPAE / VMSAv8-64) translation table descriptors, bit by bit.

Two views of the same 64-bit word:

* :class:`S1Descriptor` / :class:`S2Descriptor` decode *all* 64 bits into named fields, including
  bits the architecture leaves to software or reserves, so ``decode(x).encode() == x`` for every
  64-bit ``x``.  Use them to read and explain a descriptor.
* :class:`S1Attrs` / :class:`S2Attrs` are the attribute templates ``PageTable.map`` takes: the
  fields of a leaf (block or page) other than the output address and the type bits.

Layout (4KB granule; docs/design.md, "LPAE facts")::

    stage 1: 0 valid | 1 table/page | 4:2 AttrIndx | 5 NS | 7:6 AP[2:1] | 9:8 SH | 10 AF | 11 nG
             47:12 address | 51:48 (res0/ignored) | 52 Contiguous | 53 PXN | 54 XN (UXN)
             58:55 software | 59 PXNTable | 60 XNTable | 62:61 APTable | 63 NSTable
    stage 2: 0 valid | 1 table/page | 5:2 MemAttr | 7:6 S2AP (6 read, 7 write) | 9:8 SH | 10 AF
             11 (res0) | 47:12 address | 51:48 | 52 Contiguous | 53 (XN[0] with FEAT_XNX)
             54 XN | 58:55 software (Xen's p2m type) | 63:59 (ignored in stage 2 tables)

The same bits mean different things in a table and in a leaf descriptor (e.g. 59-63 only
matter in a stage-1 table descriptor, 2-11 only in a leaf); the decoded classes do not guess
which one a word is: they name the bit positions.
"""

from __future__ import annotations

from typing import Any

import attrs

from vaalloc.errors import RangeError

__all__ = [
    "ADDR_MASK",
    "ADDR_MASK_40",
    "AF",
    "CONTIGUOUS",
    "NG",
    "PXN",
    "S2AP_READ",
    "S2AP_WRITE",
    "SW_SHIFT",
    "TABLE",
    "TYPE_BLOCK",
    "TYPE_MASK",
    "TYPE_TABLE",
    "VALID",
    "XN",
    "S1Attrs",
    "S1Descriptor",
    "S2Attrs",
    "S2Descriptor",
    "is_block",
    "is_table",
]

# The bit names of a descriptor, the one place they are defined (docs/design.md, "LPAE facts").
VALID = 1 << 0
TABLE = 1 << 1  # "table" at levels 0-2, "page" at level 3
TYPE_MASK = 0b11  # bits 1:0 decide what a descriptor is
TYPE_TABLE = 0b11  # a table at levels 0-2, a page at level 3 (the VLPT trick rests on this)
TYPE_BLOCK = 0b01  # a block at levels 1-2 (0 with 4KB granules never), invalid at level 3
S2AP_READ = 1 << 6  # stage 2: S2AP[0]; read by a stage-1 walker it is AP[1]
S2AP_WRITE = 1 << 7  # stage 2: S2AP[1]; read by a stage-1 walker it is AP[2] (read-only)
AF = 1 << 10
NG = 1 << 11
CONTIGUOUS = 1 << 52
PXN = 1 << 53
XN = 1 << 54
SW_SHIFT = 55  # bits 58:55 are left to software (Xen keeps the p2m type there)
ADDR_MASK = ((1 << 48) - 1) & ~0xFFF  # bits 47:12
ADDR_MASK_40 = ((1 << 40) - 1) & ~0xFFF  # bits 39:12: ARMv7 LPAE's 40-bit output addresses
MASK64 = (1 << 64) - 1


def is_table(desc: int) -> bool:
    """True if ``desc`` is a table descriptor (levels 0-2) or a page (level 3): bits 1:0 = 0b11.

    The same test answers both because the architecture uses one encoding for both; which one
    a descriptor *is* depends on the level it is read at.  Raises RangeError for a ``desc``
    that is not an int."""
    if desc.__class__ is not int:
        raise _not_a_word("is_table", desc)
    return desc & TYPE_MASK == TYPE_TABLE


def is_block(desc: int) -> bool:
    """True if ``desc`` is a block descriptor (bits 1:0 = 0b01; invalid when read at level 3).
    Raises RangeError for a ``desc`` that is not an int."""
    if desc.__class__ is not int:
        raise _not_a_word("is_block", desc)
    return desc & TYPE_MASK == TYPE_BLOCK


def _not_a_word(what: str, value: object) -> RangeError:
    return RangeError(f"{what}({value!r}): a descriptor is an int")


def _uint(width: int) -> Any:
    """An attrs field validator: an int in [0, 2**width)."""

    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << width:
            raise RangeError(
                f"{type(instance).__name__}.{attribute.name} = {value!r}: "
                f"expected an integer of {width} bits"
            )

    return check


def _flag(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    """An attrs field validator: a bool (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise RangeError(f"{type(instance).__name__}.{attribute.name} = {value!r}: expected a bool")


def _address(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value & ~ADDR_MASK:
        raise RangeError(
            f"{type(instance).__name__}.{attribute.name} = {value!r}: expected a 4KB-aligned "
            "address below 2**48"
        )


# (name, lowest bit, width) of every stage-1 field, covering bits 0..63 exactly once.
_S1_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("valid", 0, 1),
    ("table", 1, 1),
    ("attr_indx", 2, 3),
    ("ns", 5, 1),
    ("ap", 6, 2),
    ("sh", 8, 2),
    ("af", 10, 1),
    ("ng", 11, 1),
    ("address", 12, 36),
    ("res48_51", 48, 4),
    ("contiguous", 52, 1),
    ("pxn", 53, 1),
    ("xn", 54, 1),
    ("sw", 55, 4),
    ("pxn_table", 59, 1),
    ("xn_table", 60, 1),
    ("ap_table", 61, 2),
    ("ns_table", 63, 1),
)

_S2_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("valid", 0, 1),
    ("table", 1, 1),
    ("mem_attr", 2, 4),
    ("s2ap", 6, 2),
    ("sh", 8, 2),
    ("af", 10, 1),
    ("res11", 11, 1),
    ("address", 12, 36),
    ("res48_51", 48, 4),
    ("contiguous", 52, 1),
    ("xn0", 53, 1),
    ("xn", 54, 1),
    ("sw", 55, 4),
    ("ignored59_63", 59, 5),
)


def _decode(fields: tuple[tuple[str, int, int], ...], value: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, lo, width in fields:
        raw = (value >> lo) & ((1 << width) - 1)
        out[name] = raw << lo if name == "address" else raw
    return out


def _encode(fields: tuple[tuple[str, int, int], ...], obj: object) -> int:
    value = 0
    for name, lo, _width in fields:
        raw = int(getattr(obj, name))
        value |= raw if name == "address" else raw << lo
    return value


def _check_u64(cls: type, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MASK64:
        raise RangeError(f"{cls.__name__}.decode({value!r}): not a 64-bit unsigned integer")


@attrs.frozen
class S1Descriptor:
    """Every bit of a stage-1 descriptor, named (see the module docstring for positions).

    ``address`` is the output/next-table address field as a byte address (bits 47:12 in
    place); ``ap`` is AP[2:1] as a 2-bit number; ``ap_table`` is APTable[1:0].
    Booleans are stored as 0/1 ints so that every field round-trips exactly.
    ``decode`` raises RangeError for a value outside [0, 2**64); the constructor raises
    RangeError for a field value that does not fit its bits.
    """

    valid: int = attrs.field(default=0, validator=_uint(1))
    table: int = attrs.field(default=0, validator=_uint(1))
    attr_indx: int = attrs.field(default=0, validator=_uint(3))
    ns: int = attrs.field(default=0, validator=_uint(1))
    ap: int = attrs.field(default=0, validator=_uint(2))
    sh: int = attrs.field(default=0, validator=_uint(2))
    af: int = attrs.field(default=0, validator=_uint(1))
    ng: int = attrs.field(default=0, validator=_uint(1))
    address: int = attrs.field(default=0, validator=_address)
    res48_51: int = attrs.field(default=0, validator=_uint(4))
    contiguous: int = attrs.field(default=0, validator=_uint(1))
    pxn: int = attrs.field(default=0, validator=_uint(1))
    xn: int = attrs.field(default=0, validator=_uint(1))
    sw: int = attrs.field(default=0, validator=_uint(4))
    pxn_table: int = attrs.field(default=0, validator=_uint(1))
    xn_table: int = attrs.field(default=0, validator=_uint(1))
    ap_table: int = attrs.field(default=0, validator=_uint(2))
    ns_table: int = attrs.field(default=0, validator=_uint(1))

    @classmethod
    def decode(cls, value: int) -> S1Descriptor:
        """Split a raw 64-bit descriptor into fields.  O(1).  Raises RangeError."""
        _check_u64(cls, value)
        return cls(**_decode(_S1_FIELDS, value))

    def encode(self) -> int:
        """The raw 64-bit descriptor these fields describe.  O(1)."""
        return _encode(_S1_FIELDS, self)


@attrs.frozen
class S2Descriptor:
    """Every bit of a stage-2 descriptor, named (see the module docstring for positions).

    ``s2ap`` is S2AP[1:0] (bit 0 = read, bit 1 = write); ``sw`` holds what Xen calls the p2m
    type.  ``decode`` raises RangeError for a value outside [0, 2**64)."""

    valid: int = attrs.field(default=0, validator=_uint(1))
    table: int = attrs.field(default=0, validator=_uint(1))
    mem_attr: int = attrs.field(default=0, validator=_uint(4))
    s2ap: int = attrs.field(default=0, validator=_uint(2))
    sh: int = attrs.field(default=0, validator=_uint(2))
    af: int = attrs.field(default=0, validator=_uint(1))
    res11: int = attrs.field(default=0, validator=_uint(1))
    address: int = attrs.field(default=0, validator=_address)
    res48_51: int = attrs.field(default=0, validator=_uint(4))
    contiguous: int = attrs.field(default=0, validator=_uint(1))
    xn0: int = attrs.field(default=0, validator=_uint(1))
    xn: int = attrs.field(default=0, validator=_uint(1))
    sw: int = attrs.field(default=0, validator=_uint(4))
    ignored59_63: int = attrs.field(default=0, validator=_uint(5))

    @classmethod
    def decode(cls, value: int) -> S2Descriptor:
        """Split a raw 64-bit descriptor into fields.  O(1).  Raises RangeError."""
        _check_u64(cls, value)
        return cls(**_decode(_S2_FIELDS, value))

    def encode(self) -> int:
        """The raw 64-bit descriptor these fields describe.  O(1)."""
        return _encode(_S2_FIELDS, self)


# Bits of a leaf that an attribute template owns: lower attributes 11:2, upper 58:52.
LEAF_ATTR_MASK = (0x3FF << 2) | (0x7F << 52)


@attrs.frozen
class S1Attrs:
    """Attributes of a stage-1 leaf, the template ``PageTable.map`` writes.

    Defaults: normal memory at MAIR index 0, inner shareable, AF=1, global, read/write at the
    privileged level only (AP[2:1]=00), executable.

    ``ap`` is AP[2:1]: 0 = RW privileged only, 1 = RW any, 2 = RO privileged only, 3 = RO any.
    In the hyp (EL2) regime AP[1] has no meaning (there is no unprivileged level): only AP[2]
    (read-only) counts, and ``pxn`` is ignored.  ``sw`` is the 4 software bits 58:55.
    Raises RangeError on a field that does not fit (a flag that is not a bool included).
    """

    attr_indx: int = attrs.field(default=0, validator=_uint(3))
    ns: bool = attrs.field(default=False, validator=_flag)
    ap: int = attrs.field(default=0, validator=_uint(2))
    sh: int = attrs.field(default=3, validator=_uint(2))
    af: bool = attrs.field(default=True, validator=_flag)
    ng: bool = attrs.field(default=False, validator=_flag)
    contiguous: bool = attrs.field(default=False, validator=_flag)
    pxn: bool = attrs.field(default=False, validator=_flag)
    xn: bool = attrs.field(default=False, validator=_flag)
    sw: int = attrs.field(default=0, validator=_uint(4))

    @property
    def bits(self) -> int:
        """The attribute bits of a leaf descriptor (no address, no type bits)."""
        return (
            (self.attr_indx << 2)
            | (int(self.ns) << 5)
            | (self.ap << 6)
            | (self.sh << 8)
            | (int(self.af) << 10)
            | (int(self.ng) << 11)
            | (int(self.contiguous) << 52)
            | (int(self.pxn) << 53)
            | (int(self.xn) << 54)
            | (self.sw << 55)
        )

    @classmethod
    def from_descriptor(cls, value: int) -> S1Attrs:
        """The template of a raw leaf descriptor (bits 51:48 are not part of a template).
        Raises RangeError for a value outside [0, 2**64)."""
        _check_u64(cls, value)
        return cls(
            attr_indx=(value >> 2) & 7,
            ns=bool(value >> 5 & 1),
            ap=(value >> 6) & 3,
            sh=(value >> 8) & 3,
            af=bool(value >> 10 & 1),
            ng=bool(value >> 11 & 1),
            contiguous=bool(value >> 52 & 1),
            pxn=bool(value >> 53 & 1),
            xn=bool(value >> 54 & 1),
            sw=(value >> 55) & 0xF,
        )


@attrs.frozen
class S2Attrs:
    """Attributes of a stage-2 leaf, the template ``PageTable.map`` writes for a p2m.

    Defaults: normal write-back memory (MemAttr 0xF), inner shareable, AF=1, read/write
    (S2AP=0b11), executable.  ``s2ap`` bit 0 grants read, bit 1 write; ``sw`` is the 4
    software bits where Xen keeps the p2m type.  Raises RangeError on a field that does not fit
    (a flag that is not a bool included).
    """

    mem_attr: int = attrs.field(default=0xF, validator=_uint(4))
    s2ap: int = attrs.field(default=3, validator=_uint(2))
    sh: int = attrs.field(default=3, validator=_uint(2))
    af: bool = attrs.field(default=True, validator=_flag)
    contiguous: bool = attrs.field(default=False, validator=_flag)
    xn: bool = attrs.field(default=False, validator=_flag)
    sw: int = attrs.field(default=0, validator=_uint(4))

    @property
    def bits(self) -> int:
        """The attribute bits of a leaf descriptor (no address, no type bits)."""
        return (
            (self.mem_attr << 2)
            | (self.s2ap << 6)
            | (self.sh << 8)
            | (int(self.af) << 10)
            | (int(self.contiguous) << 52)
            | (int(self.xn) << 54)
            | (self.sw << 55)
        )

    @classmethod
    def from_descriptor(cls, value: int) -> S2Attrs:
        """The template of a raw leaf descriptor.  Raises RangeError for a value outside
        [0, 2**64)."""
        _check_u64(cls, value)
        return cls(
            mem_attr=(value >> 2) & 0xF,
            s2ap=(value >> 6) & 3,
            sh=(value >> 8) & 3,
            af=bool(value >> 10 & 1),
            contiguous=bool(value >> 52 & 1),
            xn=bool(value >> 54 & 1),
            sw=(value >> 55) & 0xF,
        )
