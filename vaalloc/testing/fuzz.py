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

A campaign (:func:`run_campaign`) fuzzes one target for a number of examples (one hypothesis
run with the seed) or for a number of seconds (batches of up to :data:`BATCH` examples, each
batch with the next seed, sized to the time left), stops at the first failure, and
returns a :class:`CampaignResult` with the shrunk reproducer: the Python calls hypothesis
prints, then the step that differed and the trace before it.

:func:`run_campaigns` runs several targets: a budget in seconds is the budget of the whole
run, split evenly across the targets; with ``jobs`` processes every target gets ``jobs``
pieces of its share, each on its own stride of seeds, so targets and seeds are spread over the
processes and the run still ends on time.  A budget in examples gives every target that many,
in one piece, so the same seed gives the same run whatever ``jobs`` is.

Examples are counted as hypothesis counts them: the ones it runs to the end.  It also starts
examples it throws away when the data it generates runs out (``discarded``), and a failure adds
the examples that shrink it.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence

import attrs
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import HypothesisException, StopTest
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from vaalloc.errors import RangeError
from vaalloc.testing.alloc import AllocatorAdapter, DifferentialAllocatorMachine, RunStats
from vaalloc.testing.reference import IntervalModel, PlainXenVmap
from vaalloc.testing.strategies import XEN_VMAP, Region
from vaalloc.testing.tables import FORMATS, PageTableModelMachine
from vaalloc.testing.walk import WalkMachine

__all__ = [
    "BATCH",
    "DEFAULT_EXAMPLES",
    "FIRST_BATCH",
    "TARGETS",
    "CampaignResult",
    "run_campaign",
    "run_campaigns",
]

BATCH = 20  # examples per hypothesis run, at most, when the budget is in seconds
FIRST_BATCH = 5  # the first run of a budget in seconds: it measures the time an example takes
STEPS = 50  # steps per example
DEFAULT_EXAMPLES = 100


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
    """What one campaign (one target) did.

    target: its name; examples: examples hypothesis ran to the end (those shrinking a failure
    included); discarded: examples it threw away (its generated data ran out); steps: rule
    calls made; seconds: time spent on the target, summed over the processes that fuzzed it;
    seed, last_seed: the seeds used lie in ``seed..last_seed``; failure: None, or the shrunk
    reproducer (hypothesis' Python calls, then the differing step and the trace before it);
    found_after: examples run when the first failure was met; failing_seed and
    failing_examples: ``--seed`` and ``--examples`` that run the failing batch again.
    """

    target: str
    examples: int
    steps: int
    seconds: float
    seed: int
    last_seed: int = attrs.field()
    discarded: int = 0
    failure: str | None = None
    found_after: int | None = None
    failing_seed: int | None = None
    failing_examples: int | None = None

    @last_seed.default
    def _last_seed(self) -> int:
        return self.seed

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
    hypothesis_seed(seed)(machine)  # hypothesis' public way to seed a state machine
    try:
        run_state_machine_as_test(machine, settings=machine_settings(examples, steps))  # type: ignore[no-untyped-call, unused-ignore]
    except (AssertionError, HypothesisException, Exception) as exc:
        notes = [n for n in getattr(exc, "__notes__", []) if not n.startswith("Explanation")]
        message = f"{type(exc).__name__}: {exc}"
        return "\n".join([*notes, message])
    return None


class _Counter:
    """Counts a campaign's examples the way hypothesis does (see the module docstring), and
    reports each one to ``on_example``."""

    def __init__(self, on_example: Callable[[int], None] | None) -> None:
        self.stats = RunStats()
        self.discarded = 0
        self.on_example = on_example

    def machine(self, target: str) -> type[RuleBasedStateMachine]:
        """A fresh machine class of ``target`` whose examples this counter counts."""
        base = TARGETS[target]()
        counter = self

        def teardown(machine: RuleBasedStateMachine) -> None:
            # Called by hypothesis in a ``finally``: an in-flight StopTest means the example
            # was cut short because the generated data ran out, and does not count.
            discarded = isinstance(sys.exc_info()[1], StopTest)
            before = counter.stats.examples
            base.teardown(machine)  # type: ignore[no-untyped-call, unused-ignore]
            if discarded and counter.stats.examples > before:
                counter.stats.examples -= 1
                counter.discarded += 1
            if counter.on_example is not None:
                counter.on_example(counter.stats.examples)

        machine = type(base.__name__, (base,), {"teardown": teardown})
        machine.run_stats = self.stats  # type: ignore[attr-defined]
        return machine


def _check_budget(target: str, examples: int | None, seconds: float | None) -> None:
    if target not in TARGETS:
        raise RangeError(f"unknown fuzz target {target!r}; expected one of {sorted(TARGETS)}")
    if examples is not None and seconds is not None:
        raise RangeError("give examples or seconds, not both")
    if (examples is not None and examples < 1) or (seconds is not None and not seconds > 0):
        raise RangeError(f"fuzz budget must be positive (examples={examples}, seconds={seconds})")


def run_campaign(
    target: str,
    *,
    examples: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    seed_step: int = 1,
    on_example: Callable[[int], None] | None = None,
) -> CampaignResult:
    """Fuzz ``target`` for ``examples`` examples (one hypothesis run with ``seed``), or for
    about ``seconds`` seconds: batches with seeds ``seed``, ``seed + seed_step``..., the first
    of :data:`FIRST_BATCH` examples, each next one of as many examples as fit the time left
    (at most :data:`BATCH`), so the campaign ends within the budget unless its first batch
    alone takes longer.  Default: :data:`DEFAULT_EXAMPLES` examples.  Stops at the first failure.
    ``on_example(examples_so_far)`` is called after every example.  Deterministic for a given
    seed and budget in examples.  Raises RangeError for an unknown target, a non-positive
    budget or a negative seed.
    """
    _check_budget(target, examples, seconds)
    if seed < 0 or seed_step < 1:
        raise RangeError(f"seed={seed} must be >= 0 and seed_step={seed_step} >= 1")
    counter = _Counter(on_example)
    t0 = time.perf_counter()
    failure: str | None = None
    batch_seed = last_seed = seed
    size = (examples or DEFAULT_EXAMPLES) if seconds is None else FIRST_BATCH
    ran_before = 0
    while True:
        last_seed, last_size = batch_seed, size
        started = time.perf_counter()
        failure = run_machine(counter.machine(target), size, batch_seed)
        if failure is not None or seconds is None:
            break
        # Size the next batch to the time left, from what an example took so far (the last
        # batch's pace, or the whole campaign's if slower: examples grow as hypothesis
        # explores), so a campaign ends within its budget, not a whole batch after it.
        now = time.perf_counter()
        ran = counter.stats.examples + counter.discarded
        pace = max((now - t0) / max(1, ran), (now - started) / max(1, ran - ran_before))
        size = min(BATCH, int(0.9 * (seconds - (now - t0)) / pace))
        ran_before = ran
        if size < 1:
            break
        batch_seed += seed_step
    failed = failure is not None
    return CampaignResult(
        target=target,
        examples=counter.stats.examples,
        steps=counter.stats.steps,
        seconds=round(time.perf_counter() - t0, 3),
        seed=seed,
        last_seed=last_seed,
        discarded=counter.discarded,
        failure=failure,
        found_after=counter.stats.first_failure_at,
        failing_seed=last_seed if failed else None,
        failing_examples=last_size if failed else None,
    )


@attrs.frozen
class _Piece:
    """One share of one target's campaign, for one process."""

    target: str
    examples: int | None
    seconds: float | None
    seed: int
    seed_step: int


def _run_piece(piece: _Piece) -> CampaignResult:
    return run_campaign(
        piece.target,
        examples=piece.examples,
        seconds=piece.seconds,
        seed=piece.seed,
        seed_step=piece.seed_step,
    )


def _merge(target: str, parts: Sequence[CampaignResult]) -> CampaignResult:
    """One target's result from its pieces (the failing piece's reproducer, if any)."""
    failed = [p for p in parts if p.failure is not None]
    first = failed[0] if failed else parts[0]
    return CampaignResult(
        target=target,
        examples=sum(p.examples for p in parts),
        steps=sum(p.steps for p in parts),
        seconds=round(sum(p.seconds for p in parts), 3),
        seed=min(p.seed for p in parts),
        last_seed=max(p.last_seed for p in parts),
        discarded=sum(p.discarded for p in parts),
        failure=first.failure,
        found_after=first.found_after,
        failing_seed=first.failing_seed,
        failing_examples=first.failing_examples,
    )


def _pieces(
    targets: Sequence[str], examples: int | None, seconds: float | None, seed: int, jobs: int
) -> list[_Piece]:
    """The work of a run, in the order it is handed out (a target's pieces together, so
    targets finish one after the other)."""
    if seconds is None:
        return [_Piece(t, examples or DEFAULT_EXAMPLES, None, seed, 1) for t in targets]
    share = seconds / len(targets)  # each process spends `share` on every target
    return [_Piece(t, None, share, seed + j, jobs) for t in targets for j in range(jobs)]


def run_campaigns(
    targets: Sequence[str],
    *,
    examples: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    jobs: int = 1,
    on_result: Callable[[CampaignResult], None] | None = None,
    on_example: Callable[[str, int], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> list[CampaignResult]:
    """Fuzz every target of ``targets`` (module docstring: how the budget and the seeds are
    shared out over the targets and the ``jobs`` processes) and return their results in the
    order they finished; ``on_result(result)`` is called as each target finishes; with one
    process ``on_example(target, examples_so_far)`` is called after every example, with
    several ``on_tick()`` about five times a second while they work.  The run stops at the
    first failing target.  Raises RangeError for an unknown target, a bad budget, a negative
    seed or ``jobs < 1``.
    """
    if not targets:
        raise RangeError("no fuzz target given")
    for target in targets:
        _check_budget(target, examples, seconds)
    if seed < 0 or jobs < 1:
        raise RangeError(f"seed={seed} must be >= 0 and jobs={jobs} >= 1")
    pieces = _pieces(targets, examples, seconds, seed, jobs)
    results: list[CampaignResult] = []

    def finish(result: CampaignResult) -> bool:
        results.append(result)
        if on_result is not None:
            on_result(result)
        return result.failure is not None

    if jobs == 1:
        for piece in pieces:
            progress = None
            if on_example is not None:
                progress = (lambda t: lambda n: on_example(t, n))(piece.target)
            result = run_campaign(
                piece.target,
                examples=piece.examples,
                seconds=piece.seconds,
                seed=piece.seed,
                seed_step=piece.seed_step,
                on_example=progress,
            )
            if finish(result):
                break
        return results
    left = {t: sum(p.target == t for p in pieces) for t in targets}
    parts: dict[str, list[CampaignResult]] = {t: [] for t in targets}
    pool = multiprocessing.get_context().Pool(processes=jobs)
    try:
        done = pool.imap_unordered(_run_piece, pieces)
        while True:
            try:
                part = done.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                if on_tick is not None:
                    on_tick()
                continue
            except StopIteration:
                break
            parts[part.target].append(part)
            left[part.target] -= 1
            if (not left[part.target] or part.failure is not None) and finish(
                _merge(part.target, parts[part.target])
            ):
                break
    finally:
        pool.terminate()
        pool.join()
    return results
