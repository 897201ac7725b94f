"""Fuzz campaigns: the built-in differential state machines that ``vaalloc fuzz`` runs.

Targets (:data:`TARGETS`):

* ``alloc-first-fit``, ``alloc-best-fit``, ``alloc-instant-fit``: vaalloc's indexed
  ``RangeAllocator`` against :class:`~vaalloc.testing.reference.IntervalModel`, a brute-force
  scan of every hole;
* ``xen-vmap``: ``RangeAllocator.xen_vmap`` against
  :class:`~vaalloc.testing.reference.PlainXenVmap`, Xen's loop statement by statement (the
  hints ``vm_low``/``vm_top`` compared too);
* ``pagetable-<format>``: ``PageTable`` map/unmap/protect and walks against a dict model;
* ``walk-armv7-s1``: vaalloc's walk of random raw tables (loops, AF=0, blocks everywhere...)
  against :func:`~vaalloc.testing.reference.plain_hyp_walker`.

A campaign runs for a number of examples or of seconds (in batches of examples, each batch
with the next seed), stops at the first failure, and returns a :class:`CampaignResult` with the
shrunk reproducer: the Python calls hypothesis prints, then the step that differed and the
trace before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import HypothesisException
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from vaalloc.errors import RangeError
from vaalloc.testing.alloc import AllocatorAdapter, DifferentialAllocatorMachine, RunStats
from vaalloc.testing.reference import IntervalModel, PlainXenVmap
from vaalloc.testing.strategies import XEN_VMAP, Region
from vaalloc.testing.tables import FORMATS, PageTableModelMachine
from vaalloc.testing.walk import WalkMachine

__all__ = ["TARGETS", "CampaignResult", "run_campaign"]

BATCH = 20  # examples per hypothesis run when the budget is in seconds
STEPS = 50  # steps per example


def _alloc_machine(policy: str) -> type[RuleBasedStateMachine]:
    def make_adapter(self: DifferentialAllocatorMachine, region: Region) -> AllocatorAdapter:
        if policy == XEN_VMAP:
            return PlainXenVmap(region.start, region.end, region.granule)
        return IntervalModel(region.start, region.end, region.granule, policy)

    name = "Fuzz_" + policy.replace("-", "_")
    return type(
        name, (DifferentialAllocatorMachine,), {"policy": policy, "make_adapter": make_adapter}
    )


def _table_machine(fmt_name: str) -> type[RuleBasedStateMachine]:
    name = "Fuzz_pagetable_" + fmt_name.replace("-", "_")
    return type(name, (PageTableModelMachine,), {"fmt": FORMATS[fmt_name]})


def _walk_machine() -> type[RuleBasedStateMachine]:
    return type("Fuzz_walk_armv7_s1", (WalkMachine,), {})


TARGETS: dict[str, Callable[[], type[RuleBasedStateMachine]]] = {
    "alloc-first-fit": lambda: _alloc_machine("first-fit"),
    "alloc-best-fit": lambda: _alloc_machine("best-fit"),
    "alloc-instant-fit": lambda: _alloc_machine("instant-fit"),
    "xen-vmap": lambda: _alloc_machine(XEN_VMAP),
    **{f"pagetable-{n}": (lambda n=n: _table_machine(n)) for n in FORMATS},  # type: ignore[misc]
    "walk-armv7-s1": _walk_machine,
}
"""Campaign name -> factory of a fresh machine class (fresh counters per run)."""


@attrs.frozen
class CampaignResult:
    """What one campaign did.

    target: its name; examples: examples run (shrinking included); steps: rule calls made;
    seconds: wall time; seed: the first seed used; failure: None, or the shrunk reproducer
    (hypothesis' Python calls, then the differing step and the trace before it);
    found_after: examples run when the first failure was met (None when none was).
    """

    target: str
    examples: int
    steps: int
    seconds: float
    seed: int
    failure: str | None = None
    found_after: int | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-safe form (``vaalloc fuzz --json``)."""
        return attrs.asdict(self)


def machine_settings(examples: int, steps: int = STEPS) -> settings:
    """Settings for a campaign: no example database (nothing written to the working
    directory), no deadline, no explain phase (its extra runs buy nothing here)."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


def run_machine(
    machine: type[RuleBasedStateMachine], examples: int, seed: int, steps: int = STEPS
) -> str | None:
    """Run ``machine`` for ``examples`` examples with ``seed``; None, or the reproducer.

    The reproducer is what hypothesis attaches to the failure (``state = ...`` lines of the
    shrunk example) followed by the failure's own message."""
    machine._hypothesis_internal_use_seed = seed
    try:
        run_state_machine_as_test(machine, settings=machine_settings(examples, steps))  # type: ignore[no-untyped-call, unused-ignore]
    except (AssertionError, HypothesisException, Exception) as exc:
        notes = [n for n in getattr(exc, "__notes__", []) if not n.startswith("Explanation")]
        message = f"{type(exc).__name__}: {exc}"
        return "\n".join([*notes, message])
    return None


def run_campaign(
    target: str, *, examples: int | None = None, seconds: float | None = None, seed: int = 0
) -> CampaignResult:
    """Fuzz ``target`` for ``examples`` examples, or for about ``seconds`` seconds (batches of
    :data:`BATCH` examples, seeds ``seed``, ``seed + 1``...), whichever is given (default: 100
    examples).  Stops at the first failure.  Deterministic for a given seed and budget in
    examples.  Raises RangeError for an unknown target or a non-positive budget.
    """
    if target not in TARGETS:
        raise RangeError(f"unknown fuzz target {target!r}; expected one of {sorted(TARGETS)}")
    if examples is not None and seconds is not None:
        raise RangeError("give examples or seconds, not both")
    if (examples is not None and examples < 1) or (seconds is not None and seconds <= 0):
        raise RangeError(f"fuzz budget must be positive (examples={examples}, seconds={seconds})")
    stats = RunStats()
    t0 = time.perf_counter()
    failure: str | None = None
    batch_seed = seed
    while failure is None:
        machine = TARGETS[target]()
        machine.run_stats = stats
        if seconds is None:
            failure = run_machine(machine, examples or 100, batch_seed)
            break
        failure = run_machine(machine, BATCH, batch_seed)
        batch_seed += 1
        if time.perf_counter() - t0 >= seconds:
            break
    return CampaignResult(
        target=target,
        examples=stats.examples,
        steps=stats.steps,
        seconds=round(time.perf_counter() - t0, 3),
        seed=seed,
        failure=failure,
        found_after=stats.first_failure_at,
    )
