"""Bad input to the studies and the golden-vector writers: typed errors, named values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vaalloc.vectors as V
from vaalloc.errors import RangeError
from vaalloc.lpae import ARMV7_S1
from vaalloc.studies import compare as C
from vaalloc.studies import workload as W
from vaalloc.xen import Xen

CALLS: list[tuple[str, Callable[[], Any]]] = [
    ("alloc_trace ops str", lambda: V.alloc_trace("first-fit", "5", 1)),
    ("alloc_trace ops bool", lambda: V.alloc_trace("first-fit", True, 1)),
    ("alloc_trace seed str", lambda: V.alloc_trace("first-fit", 5, "x")),
    ("alloc_text None", lambda: V.alloc_text(None)),  # type: ignore[arg-type]
    ("alloc_text {}", lambda: V.alloc_text({})),
    ("walk_cases fmt str", lambda: V.walk_cases("x", 3, 1)),  # type: ignore[arg-type]
    ("walk_cases cases str", lambda: V.walk_cases(ARMV7_S1, "x", 1)),  # type: ignore[arg-type]
    ("vlpt_cases -1", lambda: V.vlpt_cases(-1, 1)),
    ("vlpt_cases str", lambda: V.vlpt_cases("x", 1)),  # type: ignore[arg-type]
    ("vlpt_case slot str", lambda: V.vlpt_case("a", 0, 1, 0)),  # type: ignore[arg-type]
    ("vlpt_case ipa None", lambda: V.vlpt_case(64, 2, 1, None)),  # type: ignore[arg-type]
    ("vlpt_text None", lambda: V.vlpt_text(None)),  # type: ignore[arg-type]
    ("write_vectors 5", lambda: V.write_vectors(5)),  # type: ignore[arg-type]
    ("write_vectors progress", lambda: V.write_vectors(Path("/nonexistent"), progress=1)),  # type: ignore[arg-type]
    ("cost str counts", lambda: C.cost({"x": "y"})),  # type: ignore[dict-item]
    ("cost None", lambda: C.cost(None)),  # type: ignore[arg-type]
    ("cost weights list", lambda: C.cost({}, ["a"])),  # type: ignore[arg-type]
    ("parse_weights 5", lambda: C.parse_weights(5)),  # type: ignore[arg-type]
    ("compare list", lambda: C.compare(["nope"])),  # type: ignore[arg-type]
    ("compare strategies str", lambda: C.compare(W.Workload(), "partitioned")),
    ("run_strategy workload", lambda: C.run_strategy(5, "walk")),  # type: ignore[arg-type]
    ("winner None", lambda: C.winner(None)),  # type: ignore[arg-type]
    ("winner [1]", lambda: C.winner([1])),  # type: ignore[list-item]
    ("sweep 5", lambda: C.sweep(5)),  # type: ignore[arg-type]
    ("sweep rates", lambda: C.sweep(["walk"], rates=[0])),
    ("sweep logdirty", lambda: C.sweep(["walk"], logdirty=["1"])),  # type: ignore[list-item]
    ("crossovers None", lambda: C.crossovers(None)),  # type: ignore[arg-type]
    ("totals 5", lambda: C.totals(5)),  # type: ignore[arg-type]
    ("DomainSpec migrate", lambda: W.DomainSpec(migrate="yes")),  # type: ignore[arg-type]
    ("Workload domains", lambda: W.Workload(domains=5)),  # type: ignore[arg-type]
    ("Workload seed", lambda: W.Workload(seed=1.5)),  # type: ignore[arg-type]
    ("Workload xen_hot_pages", lambda: W.Workload(xen_hot_pages="4")),  # type: ignore[arg-type]
    ("Workload.standard logdirty", lambda: W.Workload.standard(logdirty="1")),  # type: ignore[arg-type]
    ("run_workload None", lambda: W.run_workload(None, W.Workload())),  # type: ignore[arg-type]
    ("run_workload workload", lambda: W.run_workload(Xen(), None)),  # type: ignore[arg-type]
    ("teardown None", lambda: W.teardown(None)),  # type: ignore[arg-type]
    ("teardown [5]", lambda: W.teardown(Xen(), [5])),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
def test_bad_input(name: str, call: Callable[[], Any]) -> None:
    with pytest.raises(RangeError):
        call()


def test_teardown_checks_every_domain_first() -> None:
    xen = Xen(cpus=1)
    d = xen.create_domain(2 << 20)
    with pytest.raises(RangeError):
        W.teardown(xen, [d, "d2"])  # type: ignore[list-item]
    assert d.alive
