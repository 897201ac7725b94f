"""The sparse chunked bitmap against a plain set of bits, and its cost properties."""

from __future__ import annotations

import tracemalloc

import hypothesis.strategies as st
from hypothesis import given

from vaalloc.alloc.bitmap import CHUNK_BITS, FULL, ChunkedBitmap

OPS = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(0, 5 * CHUNK_BITS) | st.integers(0, 1 << 40),
        st.integers(1, 3 * CHUNK_BITS) | st.integers(1, 70),
    ),
    max_size=40,
)


@given(ops=OPS, probes=st.lists(st.integers(0, 1 << 40) | st.integers(0, 6 * CHUNK_BITS)))
def test_bitmap_matches_a_set(ops: list[tuple[bool, int, int]], probes: list[int]) -> None:
    bm = ChunkedBitmap()
    runs: list[tuple[bool, int, int]] = []
    for value, start, n in ops:
        (bm.set_run if value else bm.clear_run)(start, n)
        runs.append((value, start, n))

    def model(bit: int) -> bool:
        state = False
        for value, start, n in runs:
            if start <= bit < start + n:
                state = value
        return state

    assert bm.check() is None
    edges = {p for _, s, n in runs for p in (s - 1, s, s + n - 1, s + n)} | set(probes)
    for p in sorted(b for b in edges if b >= 0):
        assert bm.test(p) == model(p)
        nxt = bm.next_set(p, p + 10 * CHUNK_BITS)
        assert all(not model(q) for q in range(p, min(nxt, p + 200)))
        if nxt < p + 10 * CHUNK_BITS:
            assert model(nxt)
        prv = bm.prev_set(p, 0)
        assert prv == -1 or model(prv)
        assert all(not model(q) for q in range(max(prv + 1, p - 200), p + 1))
        nz = bm.next_clear(p, p + 10 * CHUNK_BITS)
        assert all(model(q) for q in range(p, min(nz, p + 200)))
    # runs() reproduces exactly the set bits (checked through popcount and membership).
    total = 0
    for s, e in bm.runs():
        assert model(s) and model(e - 1) and not model(e) and (s == 0 or not model(s - 1))
        total += e - s
    assert total == bm.popcount()


def test_long_runs_share_one_full_chunk_and_cost_little() -> None:
    bm = ChunkedBitmap()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    bm.set_run(5, 1 << 20)  # 1M bits: 256 chunks
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    full = [v for v in bm._chunks.values() if v == FULL]
    assert len(full) == (1 << 20) // CHUNK_BITS - 1
    assert all(v is FULL for v in full)  # one shared object, not 255 copies of 512 bytes
    assert used < 64 * 1024
    assert bm.popcount() == 1 << 20
    bm.clear_run(5, 1 << 20)
    assert bm.chunk_count == 0 and bm.check() is None


def test_construction_is_free_for_a_huge_space() -> None:
    bm = ChunkedBitmap()
    bm.set_run((1 << 48) - 513, 512)
    assert bm.chunk_count == 1
    assert bm.next_set(0, 1 << 48) == (1 << 48) - 513
    assert bm.prev_set((1 << 48) - 1, 0) == (1 << 48) - 2
