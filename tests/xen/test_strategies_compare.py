"""The comparison machinery: workload, cost weights, sweep and crossovers (the command's tables
and charts are tested in tests/test_cli_compare.py).

No test asserts a cycle total that the weights alone decide: cycles are checked against the
weighted sum of the raw counts, and strategies are compared on counts.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaalloc.errors import RangeError
from vaalloc.studies.compare import (
    DEFAULT_WEIGHTS,
    Result,
    SweepPoint,
    compare,
    cost,
    crossovers,
    parse_weights,
    run_strategy,
    sweep,
    winner,
)
from vaalloc.studies.workload import DomainSpec, Workload

MB = 1 << 20
TINY = {"domains": 3, "ram": 4 * MB, "duration_ms": 8.0, "write_rate": 10.0}


def tiny(logdirty: int = 1, rate: float = 1000.0, seed: int = 0) -> Workload:
    return Workload.standard(logdirty=logdirty, switch_rate=rate, seed=seed, **TINY)  # type: ignore[arg-type]


# --- workload -------------------------------------------------------------------------------
def test_guest_behaviour_does_not_depend_on_the_strategy() -> None:
    results = compare(tiny(logdirty=2), ["partitioned", "switched", "walk", "walk64"])
    first = results[0]
    assert first.faults > 0 and first.switches > 0
    for r in results[1:]:
        # guest_tlb_misses may differ: hyp entries of a strategy evict guest ones (one TLB).
        for key in ("faults", "context_switches", "p2m_pte_writes", "tlbi:TLBIALL"):
            assert r.counts.get(key) == first.counts.get(key), (r.strategy, key)
        assert r.stats == first.stats


def test_switch_costs_where_the_strategy_says() -> None:
    by = {r.strategy: r for r in compare(tiny(), ["partitioned", "switched", "walk"])}
    assert by["partitioned"].switch_counts.get("xen_second_writes", 0) == 0
    assert by["walk"].switch_counts.get("tlbi", 0) == 0
    assert by["switched"].switch_counts["xen_second_writes"] > 0
    assert (
        by["switched"].counts["context_switch_slot_writes"]
        == (by["switched"].switch_counts["xen_second_writes"])
    )
    assert by["walk"].counts["map_domain_page"] == 3 * by["walk"].faults


def test_run_is_reproducible_for_a_seed() -> None:
    a = run_strategy(tiny(seed=5), "switched")
    b = run_strategy(tiny(seed=5), "switched")
    assert a.counts == b.counts and a.switch_counts == b.switch_counts and a.stats == b.stats


def test_sweep_is_reproducible_for_a_seed() -> None:
    kw = {"rates": (100, 2000), "logdirty": (1,), "domains": 3, "ram": 4 * MB}
    kw |= {"duration_ms": 6.0, "seed": 3}

    def counts() -> list[list[dict[str, int]]]:
        pts = sweep(["partitioned", "switched"], **kw)  # type: ignore[arg-type]
        return [[r.counts for r in p.results] for p in pts]

    assert counts() == counts()


def test_partitioned_refuses_when_the_window_is_too_small() -> None:
    refused = run_strategy(tiny(logdirty=2), "partitioned", capacity=1)
    assert not refused.supported and refused.stats["refused"] > 0
    hybrid = run_strategy(tiny(logdirty=2), "hybrid", capacity=1)
    assert hybrid.supported and hybrid.counts["fallback_walks"] >= 1
    assert winner([refused]) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"ram": 3 * MB},
        {"vcpus": 0},
        {"write_rate": 0},
        {"working_set": 1.5},
        {"hot_share": -0.1},
        {"superpages": True},
    ],
)
def test_domain_spec_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(RangeError):
        DomainSpec(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [{"domains": ()}, {"pcpus": 0}, {"switch_rate": -1}, {"xen_hot_pages": 65}]
)
def test_workload_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(RangeError):
        Workload(**bad)  # type: ignore[arg-type]


def test_standard_rejects_more_migrations_than_domains() -> None:
    with pytest.raises(RangeError, match="logdirty=3"):
        Workload.standard(domains=2, logdirty=3)


def test_superpage_share_is_honoured() -> None:
    from vaalloc.studies.workload import run_workload
    from vaalloc.xen import Xen

    xen = Xen(2, lookup="partitioned")
    spec = DomainSpec(ram=8 * MB, superpages=0.5)
    run_workload(xen, Workload(domains=(spec,), duration_ms=1.0))
    (d,) = xen.domains.values()
    sizes = [size for _, size, _ in d.stage2.leaves()]
    assert sizes.count(2 * MB) == 2  # half of the four 2MB chunks stay blocks


# --- weights --------------------------------------------------------------------------------
counts_st = st.dictionaries(st.sampled_from(sorted(DEFAULT_WEIGHTS)), st.integers(0, 10**6))


weights_st = st.dictionaries(st.sampled_from(sorted(DEFAULT_WEIGHTS)), st.floats(0, 1e4))


@settings(max_examples=30)
@given(counts=counts_st, override=weights_st)
def test_cost_is_the_documented_weighted_sum(
    counts: dict[str, int], override: dict[str, float]
) -> None:
    weights = {**DEFAULT_WEIGHTS, **override}
    expected = sum(weights[k] * n for k, n in counts.items())
    assert math.isclose(cost(counts, override), expected, rel_tol=1e-9, abs_tol=1e-6)


def test_aggregate_counters_cost_nothing() -> None:
    assert cost({"tlbi": 10, "context_switch_slot_writes": 5, "faults": 3}) == 0


def test_result_cycles_follow_its_counts_and_weights() -> None:
    r = run_strategy(tiny(), "walk", weights={"map_domain_page": 1000})
    assert r.cycles == cost(r.counts, {"map_domain_page": 1000})
    doubled = run_strategy(tiny(), "walk", weights={"map_domain_page": 2000})
    grown = doubled.cycles - r.cycles
    assert math.isclose(grown, 1000 * r.counts["map_domain_page"])
    assert r.as_dict()["counts"] == dict(sorted(r.counts.items()))


def test_parse_weights() -> None:
    assert parse_weights("tlbi:TLBIALLH=200, hyp_walk_reads=7.5") == {
        "tlbi:TLBIALLH": 200.0,
        "hyp_walk_reads": 7.5,
    }
    for bad in ("nosuch=1", "hyp_walk_reads", "hyp_walk_reads=x", "hyp_walk_reads=-1"):
        with pytest.raises(RangeError):
            parse_weights(bad)
    with pytest.raises(RangeError):
        cost({}, {"nosuch": 1})


# --- crossovers -----------------------------------------------------------------------------
def fake(strategy: str, per_fault: float, refused: int = 0) -> Result:
    """A result whose cost per fault is ``per_fault`` under a one-counter weight."""
    return Result(
        strategy=strategy,
        counts={"faults": 100, "vlpt_reads": round(per_fault * 100)},
        switch_counts={},
        migration_counts={},
        stats={"refused": refused},
        weights={"vlpt_reads": 1.0},
    )


def test_crossover_found_between_the_rates_where_order_flips() -> None:
    pts = [
        SweepPoint(10, 1, None, (fake("a", 100), fake("b", 300))),
        SweepPoint(100, 1, None, (fake("a", 200), fake("b", 300))),
        SweepPoint(1000, 1, None, (fake("a", 400), fake("b", 300))),
    ]
    (c,) = crossovers(pts)
    assert (c.below, c.above, c.rate_lo, c.rate_hi) == ("a", "b", 100, 1000)
    assert 100 < c.rate < 1000


def test_no_crossover_across_sub_architectures_or_unsupported_points() -> None:
    pts = [
        SweepPoint(10, 1, None, (fake("walk", 100), fake("walk64", 300), fake("c", 50, 1))),
        SweepPoint(100, 1, None, (fake("walk", 400), fake("walk64", 300), fake("c", 900))),
    ]
    assert crossovers(pts) == []
    assert winner(pts[0].results).strategy == "walk"  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", ["switched", "switched-va", "walk", "walk64", "partitioned"])
def test_workload_with_smp_guests_leaves_no_stale_hit(strategy: str) -> None:
    """A two-vCPU migrating guest runs on both pCPUs at once (its window installed twice under
    ``switched``) beside plain guests with superpages; the stale detector stays silent."""
    from vaalloc.studies.workload import run_workload, teardown
    from vaalloc.xen import Xen
    from vaalloc.xen.lookup import DirectMapWalk

    xen = Xen(2, lookup=strategy, stale_check=True)
    specs = (
        DomainSpec(ram=4 * MB, vcpus=2, migrate=True, superpages=0.5),
        DomainSpec(ram=4 * MB, migrate=True),
        DomainSpec(ram=2 * MB, superpages=1.0),
    )
    stats = run_workload(xen, Workload(domains=specs, switch_rate=2000, duration_ms=4.0))
    assert stats.writes > 0 and xen.ledger.counts["faults"] > 0
    xen.check()
    assert xen.stale_hits() == []
    if isinstance(xen.lookup, DirectMapWalk):
        assert xen.lookup.stale_hits() == 0
    teardown(xen)
    assert xen.mem.frames_in_use == xen.boot_frames
