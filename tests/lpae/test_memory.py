"""PhysicalMemory: sparse storage, little-endian sub-word access, frame bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaalloc.errors import AlignmentError, InvalidFree, OutOfSpace, RangeError
from vaalloc.lpae import PhysicalMemory

WINDOW = 0x4000  # a few frames where random accesses land


@st.composite
def accesses(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    ops = []
    for _ in range(draw(st.integers(1, 40))):
        size = draw(st.sampled_from([1, 4, 8]))
        offset = draw(st.integers(0, WINDOW // size - 1)) * size
        ops.append((size, offset, draw(st.integers(0, (1 << (8 * size)) - 1))))
    return ops


@given(accesses())
def test_reads_match_a_little_endian_byte_array(ops: list[tuple[int, int, int]]) -> None:
    mem = PhysicalMemory(40)
    base = 0x1_0000_0000 - 0x2000  # straddles a 4GB boundary, far from RAM
    model = bytearray(WINDOW)
    write = {1: mem.write8, 4: mem.write32, 8: mem.write64}
    read = {1: mem.read8, 4: mem.read32, 8: mem.read64}
    for size, offset, value in ops:
        write[size](base + offset, value)
        model[offset : offset + size] = value.to_bytes(size, "little")
    for size, offset, _ in ops:
        assert read[size](base + offset) == int.from_bytes(model[offset : offset + size], "little")
    assert mem.read_bytes(base, WINDOW) == bytes(model)
    for pa, data in mem.frames():
        offset = pa - base
        assert 0 <= offset < WINDOW and data == bytes(model[offset : offset + 4096])
    assert mem.frames_in_use == 0  # storage is not allocation


def test_unwritten_memory_reads_zero_and_stores_nothing() -> None:
    mem = PhysicalMemory(40)
    assert mem.read64(0xFF_FFFF_FFF8) == 0
    assert list(mem.frames()) == []
    mem.write64(0xFF_FFFF_FFF8, 0x1122_3344_5566_7788)
    assert [pa for pa, _ in mem.frames()] == [0xFF_FFFF_F000]
    assert mem.read8(0xFF_FFFF_FFFF) == 0x11


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.read64(1 << 40), RangeError),
        (lambda m: m.write64(1 << 40, 0), RangeError),
        (lambda m: m.write64(0x1004, 0), AlignmentError),
        (lambda m: m.read32(0x1002), AlignmentError),
        (lambda m: m.write64(0x1000, 1 << 64), RangeError),
        (lambda m: m.write8(0x1000, 256), RangeError),
        (lambda m: m.write64(-8, 0), RangeError),
    ],
)
def test_bad_accesses_raise_typed_errors_and_store_nothing(call: object, error: type) -> None:
    mem = PhysicalMemory(40)
    with pytest.raises(error, match="PhysicalMemory"):
        call(mem)  # type: ignore[operator]
    assert list(mem.frames()) == []


def test_frames_are_allocated_zeroed_aligned_and_counted() -> None:
    mem = PhysicalMemory(32, ram_base=0x8000_0000, ram_size=0x10_0000)
    first = mem.alloc_frames()
    assert first == 0x8000_0000 and mem.frames_in_use == 1
    mem.write64(first, 0xDEAD)
    pair = mem.alloc_frames(2, align=2)
    assert pair % 0x2000 == 0 and mem.frames_in_use == 3
    assert mem.free_frames(first) == 1 and mem.frames_in_use == 2
    again = mem.alloc_frames()
    assert again == first and mem.read64(again) == 0  # a reused frame comes back zeroed
    with pytest.raises(InvalidFree):
        mem.free_frames(pair + 0x1000)
    assert mem.frames_in_use == 3


def test_running_out_of_ram_is_out_of_space_and_changes_nothing() -> None:
    mem = PhysicalMemory(32, ram_base=0x8000_0000, ram_size=0x4000)
    mem.alloc_frames(3)
    with pytest.raises(OutOfSpace):
        mem.alloc_frames(2)
    assert mem.frames_in_use == 3
    mem.alloc_frames(1)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(RangeError):
        PhysicalMemory(pa_bits=20)
    with pytest.raises(RangeError):
        PhysicalMemory(32, ram_base=0xF000_0000, ram_size=0x2000_0000)
    with pytest.raises(AlignmentError):
        PhysicalMemory(40, ram_base=0x8000_0800)
