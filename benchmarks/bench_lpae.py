"""LPAE model benchmark: map a 4GB guest, translate random IPAs through the MMU, TLB off and on.

Targets (2-core machine): mapping 1M 4KB pages in an ARMv7 stage-2 table <= 2.5 s; table memory
<= 1.1x of 8 bytes per descriptor; RSS growth <= 48MB (issue 3); stage-2 translation through
the MMU on a TLB miss >= 500k/s, on a hit >= 2M/s, and the batch ``MMU.guest_pa_many`` >= 800k/s
on misses (issue 10).  Each measurement runs in a fresh interpreter, alternating today's code
with the code before the redesign (:mod:`benchmarks.baseline`), ``RUNS`` times; the table shows
medians and their ratio.  The empty-loop row says how fast Python itself ran meanwhile.

Run: ``python3 -m benchmarks lpae``.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

GUEST_IPA = 0x8000_0000
GUEST_SIZE = 4 << 30
GUEST_PA = 0x1_0000_0000
RUNS = 5
LOOKUPS = 200_000

#: (row, target, higher is better) in print order.
ROWS: list[tuple[str, float, bool]] = [
    ("map 4GB guest, 1M 4KB pages (s)", 2.5, False),
    ("table memory / (8 B x descriptors)", 1.1, False),
    ("RSS growth for the guest (MB)", 48.0, False),
    ("stage 2, TLB miss: MMU.guest_pa (/s)", 500_000.0, True),
    ("stage 2, TLB hit: MMU.guest_pa (/s)", 2_000_000.0, True),
    ("stage 2, misses: MMU.guest_pa_many (/s)", 800_000.0, True),
    ("hyp, TLB miss: MMU.hyp_pa (/s)", 0.0, True),
    ("hyp, TLB hit: MMU.hyp_pa (/s)", 0.0, True),
    ("walk only: PageTable.translate_pa (/s)", 0.0, True),
    ("full walk object: PageTable.walk (/s)", 0.0, True),
    ("empty Python loop (/s)", 0.0, True),
]


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def _rate(fn: Callable[[int], object], addresses: list[int]) -> float:
    gc.collect()
    start = time.perf_counter()
    for address in addresses:
        fn(address)
    return len(addresses) / (time.perf_counter() - start)


def measure() -> dict[str, float]:
    """One round of every row, in this interpreter (its ``vaalloc`` is today's or the
    baseline's: only calls both have are used, and the batch falls back to the loop)."""
    from vaalloc.lpae import (
        ARMV7_S1,
        ARMV7_S2_40,
        MMU,
        TLB,
        PageTable,
        PhysicalMemory,
        S1Attrs,
        S2Attrs,
    )

    out: dict[str, float] = {}
    rss = _rss()
    mem = PhysicalMemory(40)
    p2m = PageTable(mem, ARMV7_S2_40)
    gc.collect()
    start = time.perf_counter()
    p2m.map(GUEST_IPA, GUEST_PA, GUEST_SIZE, S2Attrs(), max_level_block=3)
    out[ROWS[0][0]] = time.perf_counter() - start
    out[ROWS[2][0]] = (_rss() - rss) / 2**20
    out[ROWS[1][0]] = _table_ratio(mem)

    rng = random.Random(3)
    ipas = [GUEST_IPA + rng.randrange(GUEST_SIZE // 8) * 8 for _ in range(LOOKUPS)]
    pages = [GUEST_IPA + rng.randrange(GUEST_SIZE >> 12) * 4096 for _ in range(256)]
    hot = [rng.choice(pages) + rng.randrange(512) * 8 for _ in range(LOOKUPS)]
    miss = MMU(mem, TLB(0))
    miss.set_stage2(p2m.root, vmid=1)
    hit = MMU(mem, TLB(512))
    hit.set_stage2(p2m.root, vmid=1)
    for ipa in hot[:2000]:
        hit.guest_pa(ipa)
    expected = [GUEST_PA + i - GUEST_IPA for i in ipas[:1000]]
    assert [miss.guest_pa(i) for i in ipas[:1000]] == expected
    out[ROWS[3][0]] = _rate(miss.guest_pa, ipas)
    out[ROWS[4][0]] = _rate(hit.guest_pa, hot)
    many = getattr(miss, "guest_pa_many", None)
    gc.collect()
    start = time.perf_counter()
    # The baseline has no batch: the loop it replaces.
    pas = many(ipas) if many is not None else [miss.guest_pa(i) for i in ipas]
    out[ROWS[5][0]] = len(ipas) / (time.perf_counter() - start)
    assert pas[:1000] == expected

    xen = PageTable(mem, ARMV7_S1)
    xen.map(0x4000_0000, GUEST_PA, 1 << 30, S1Attrs(), max_level_block=3)
    hyp_miss = MMU(mem, TLB(0))
    hyp_miss.set_hyp(xen.root)
    hyp_hit = MMU(mem, TLB(512))
    hyp_hit.set_hyp(xen.root)
    vas = [0x4000_0000 + (ipa - GUEST_IPA) % (1 << 30) for ipa in ipas]
    hot_vas = [0x4000_0000 + (ipa - GUEST_IPA) % (1 << 30) for ipa in hot]
    for va in hot_vas[:2000]:
        hyp_hit.hyp_pa(va)
    out[ROWS[6][0]] = _rate(hyp_miss.hyp_pa, vas)
    out[ROWS[7][0]] = _rate(hyp_hit.hyp_pa, hot_vas)
    out[ROWS[8][0]] = _rate(p2m.translate_pa, ipas)
    out[ROWS[9][0]] = _rate(p2m.walk, ipas[: LOOKUPS // 4])
    out[ROWS[10][0]] = _rate(lambda _a: None, ipas)
    return out


def _table_ratio(mem: object) -> float:
    """Bytes the model spends on populated table frames over 8 bytes x their descriptors."""
    storage = getattr(mem, "storage", None)
    if storage is None:  # the baseline kept it private
        storage = mem._frames  # type: ignore[attr-defined]
    per_frame = sys.getsizeof(next(iter(storage.values())))
    dict_bytes = sys.getsizeof(storage) + sum(sys.getsizeof(k) for k in storage)
    return float(len(storage) * per_frame + dict_bytes) / (len(storage) * 512 * 8)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import baseline

    print(__doc__.split("\n\n")[0])
    now, before = baseline.side_by_side("bench_lpae", "measure", [], RUNS)
    print(f"medians of {RUNS} runs, {LOOKUPS} random addresses per rate\n")
    baseline.report(ROWS, now, before)


if __name__ == "__main__":
    main()
