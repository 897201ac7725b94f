"""The API fuzz: every public callable of vaalloc.lpae and vaalloc.xen, called with arguments
drawn from wrong types and edge values, raises nothing but VAAllocError subclasses, and a call
that raises leaves the whole model as it was.

The public callables are enumerated from the modules' ``__all__`` (functions, classes, and
every public method, property and constructor of those classes) and must be exactly the ones
listed in ``public_api.txt``: a new one fails :func:`test_every_public_callable_is_known`
until it is listed (and so fuzzed, by its parameter names) or exempted below with a reason.

Arguments are drawn per parameter name (:data:`PARAMS`): the values a caller should pass
(mapped addresses, a live domain, a real format...), edge values (0, -1, 2**64, misaligned,
the edges of RAM and of the IPA space), and values of the wrong type (None, bools, floats,
strings, lists, other objects). The receiver of a method is a small live model (:class:`World`)
kept across the examples of one callable: whatever the calls before did, the next one must
still only raise typed errors.

A FaultError (a translation that faulted, the answer of an access) and a guest access's
MappingError (a real fault) may leave the TLBs and counters changed: the walk was made, as on
hardware. Everything else (memory, allocations, tables, domains, dirty sets) must be as it was;
any other error must leave everything, counters included, as it was.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaalloc.lpae
import vaalloc.xen
from tests.api.model_state import lpae_state, xen_state
from vaalloc.errors import MappingError, VAAllocError
from vaalloc.lpae import (
    AARCH64_S1_48,
    AARCH64_S2_PA_RANGES,
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    MMU,
    TLB,
    TLBI_OPS,
    Fault,
    FaultError,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S1Descriptor,
    S2Attrs,
    S2Descriptor,
    StaleHit,
)
from vaalloc.xen import Xen
from vaalloc.xen.ledger import Ledger
from vaalloc.xen.lookup.base import P2MLookup

API_FILE = Path(__file__).with_name("public_api.txt")
MB = 1 << 20
PAGE = 4096

# -- the public callables ------------------------------------------------------------------------


def _modules() -> list[Any]:
    out = []
    for pkg in (vaalloc.lpae, vaalloc.xen):
        out.append(pkg)
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not info.name.rsplit(".", 1)[1].startswith("_"):
                out.append(importlib.import_module(info.name))
    return out


def public_callables() -> dict[str, tuple[str, Any, str]]:
    """``key -> (kind, owner, name)``: kind ``function`` (owner the function), ``new``
    (owner the class), ``method``/``classmethod``/``staticmethod``/``property`` (owner the
    class defining it, name the attribute)."""
    out: dict[str, tuple[str, Any, str]] = {}
    for mod in _modules():
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if inspect.isclass(obj) and obj.__module__.startswith("vaalloc."):
                base = f"{obj.__module__}.{obj.__qualname__}"
                out[f"{base}()"] = ("new", obj, "")
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(value, property):
                        out[f"{base}.{attr}"] = ("property", obj, attr)
                    elif isinstance(value, classmethod):
                        out[f"{base}.{attr}"] = ("classmethod", obj, attr)
                    elif isinstance(value, staticmethod):
                        out[f"{base}.{attr}"] = ("staticmethod", obj, attr)
                    elif inspect.isfunction(value):
                        out[f"{base}.{attr}"] = ("method", obj, attr)
            elif inspect.isfunction(obj) and obj.__module__.startswith("vaalloc."):
                out[f"{obj.__module__}.{obj.__qualname__}"] = ("function", obj, name)
    return out


_HOOKS = "strategy interface: called by the core (Xen, context_switch, log-dirty), checked there"
_WALK = "the walk strategy's own map/read primitives, called by its handler with checked arguments"
_TLB = "TLB storage primitive of the generated lookups (lead's hot path): trusts its arguments"

#: Callables that trust their arguments by contract (the hot path's primitives, validated
#: once by their public callers), with the reason. They are enumerated, not fuzzed.
EXEMPT: dict[str, str] = {
    "vaalloc.lpae.memory.PhysicalMemory.load64": "read64 without checks, by contract",
    "vaalloc.lpae.memory.PhysicalMemory.store64": "write64 without checks, by contract",
    "vaalloc.xen.hypervisor.Hypervisor.hyp_read": "the core's hot path: trusts its arguments",
    "vaalloc.xen.hypervisor.Hypervisor.hyp_write": "the core's hot path: trusts its arguments",
    "vaalloc.xen.hypervisor.Hypervisor.flush_xen_va": "core TLB maintenance: trusted callers",
    "vaalloc.xen.hypervisor.Hypervisor.flush_xen_va_local": "core TLB maintenance: trusted",
    "vaalloc.xen.hypervisor.Hypervisor.flush_guest_all": "core TLB maintenance: trusted",
    "vaalloc.xen.hypervisor.Hypervisor.flush_guest_local": "core TLB maintenance: trusted",
    "vaalloc.xen.hypervisor.Hypervisor.load_stage2": "core VTTBR load: context_switch checks",
    "vaalloc.xen.logdirty.LogDirty.handle_fault": "the fault path (Xen._access checks)",
    "vaalloc.lpae.regime.Regime()": "the MMU's compiled regime: built by set_hyp/set_stage2",
    "vaalloc.lpae.regime.Regime.key": "the MMU's compiled regime",
    "vaalloc.lpae.regime.Regime.shifts": "the MMU's compiled regime",
    "vaalloc.lpae.regime.build_lookup": "the MMU's lookup compiler (lead's hot path)",
    "vaalloc.lpae.regime.Counters()": "a typing Protocol",
    "vaalloc.lpae.fastwalk.leaf_fn": "compiled walker factory (lead's hot path)",
    "vaalloc.lpae.fastwalk.translate_fn": "compiled walker factory (lead's hot path)",
    "vaalloc.lpae.tlb.TLBEntry()": "TLB entries are made by the lookups (lead's hot path)",
    "vaalloc.lpae.tlb.bucket_id": _TLB,
    "vaalloc.lpae.tlb.tlb_key": _TLB,
    "vaalloc.lpae.tlb.key_fields": _TLB,
    "vaalloc.lpae.tlb.TLB.bucket": _TLB,
    "vaalloc.lpae.tlb.TLB.lookup": _TLB,
    "vaalloc.lpae.tlb.TLB.insert": _TLB,
    "vaalloc.lpae.tlb.TLB.fill": _TLB,
    "vaalloc.lpae.tlb.TLB.touch": _TLB,
    "vaalloc.lpae.tlb.TLB.refresh": _TLB,
    "vaalloc.lpae.tlb.TLB.evict": _TLB,
    "vaalloc.lpae.tlb.TLB.invalidate_hyp": _TLB + " (MMU.tlbi checks)",
    "vaalloc.lpae.tlb.TLB.invalidate_vmid": _TLB + " (MMU.tlbi checks)",
    "vaalloc.lpae.tlb.TLB.invalidate_guest": _TLB + " (MMU.tlbi checks)",
    "vaalloc.xen.lookup.LookupFactory()": "a typing Protocol",
    "vaalloc.xen.lookup.base.slot_value": "the strategies' rule for a slot, on entries they read",
    "vaalloc.xen.lookup.base.slot_pages": "the strategies' flush list, on entries they read",
    "vaalloc.xen.lookup.base.leaf_view_page": "the strategies' VLPT arithmetic, on slots they own",
    "vaalloc.xen.lookup.walk.DomheapWalk.map_pa": _WALK,
    "vaalloc.xen.lookup.walk.DomheapWalk.unmap_va": _WALK,
    "vaalloc.xen.lookup.walk.DomheapWalk.read_va": _WALK,
    "vaalloc.xen.lookup.walk.DomheapWalk.write_va": _WALK,
    "vaalloc.xen.lookup.walk.DirectMapWalk.map_pa": _WALK,
    "vaalloc.xen.lookup.walk.DirectMapWalk.unmap_va": _WALK,
    "vaalloc.xen.lookup.walk.DirectMapWalk.read_va": _WALK,
    "vaalloc.xen.lookup.walk.DirectMapWalk.write_va": _WALK,
}
_STRATEGIES = {
    "base.P2MLookup": (),
    "partitioned.PartitionedVLPT": (),
    "switched.SwitchedVLPT": (),
    "walk.DomheapWalk": (),
    "hybrid.HybridLookup": (),
}
_FOUND = public_callables()
for _cls in _STRATEGIES:
    for _hook in (
        "reserve",
        "on_enable",
        "on_disable",
        "on_context_switch",
        "on_p2m_change",
        "read_second",
        "read_leaf",
        "write_leaf",
    ):
        if f"vaalloc.xen.lookup.{_cls}.{_hook}" in _FOUND:
            EXEMPT[f"vaalloc.xen.lookup.{_cls}.{_hook}"] = _HOOKS


def test_every_public_callable_is_known() -> None:
    """The enumeration equals public_api.txt, and every exemption names a public callable."""
    listed = {line.strip() for line in API_FILE.read_text().splitlines() if line.strip()}
    found = set(public_callables())
    new, gone = sorted(found - listed), sorted(listed - found)
    assert not new, f"public callables the fuzz does not know (add to {API_FILE.name}): {new}"
    assert not gone, f"listed in {API_FILE.name} but not public any more: {gone}"
    assert set(EXEMPT) <= found, sorted(set(EXEMPT) - found)


def test_docstrings_say_what_they_raise() -> None:
    """Every public callable that takes arguments says in its docstring what it raises (or
    that it raises nothing), as the project's standard asks."""
    silent = []
    for key, (kind, owner, name) in sorted(public_callables().items()):
        if key in EXEMPT:
            continue
        if kind == "new":
            docs = [owner.__doc__, vars(owner).get("__init__", owner).__doc__]
            fn: Any = owner
        elif kind == "function":
            docs, fn = [owner.__doc__], owner
        else:
            value = vars(owner)[name]
            if isinstance(value, property):
                if value.fset is None:
                    continue
                fn = value.fset
                docs = [value.fget.__doc__ if value.fget else None, fn.__doc__]
            else:
                fn = getattr(owner, name)
                docs = [fn.__doc__]
        if not _parameters(fn):
            continue
        if not any(doc and "raise" in doc.lower() for doc in docs):
            silent.append(key)
    assert not silent, f"docstrings that do not say what the call raises: {silent}"


# -- the model the calls are made on -----------------------------------------------------------


class World:
    """A small live model: lpae memory, tables and an MMU with both regimes, and Xen systems
    (one per p2m lookup strategy asked for) with a tracked and a plain domain each."""

    def __init__(self) -> None:
        self.mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=4 * MB)
        self.pt = PageTable(self.mem, ARMV7_S1)
        self.pt.map(0x40_0000, 0x8010_0000, 4 * PAGE, S1Attrs())
        self.pt.map(0x60_0000, 0x8020_0000, 2 * MB, S1Attrs(ap=2))
        self.s2 = PageTable(self.mem, ARMV7_S2_40)
        self.s2.map(0x8000_0000, 0x8010_0000, 2 * MB, S2Attrs(), max_level_block=3)
        self.mmu = MMU(self.mem, TLB(16))
        self.mmu.set_hyp(self.pt.root)
        self.mmu.set_stage2(self.s2.root, vmid=3)
        self.mmu.hyp_read64(0x40_0000)
        self.mmu.guest_pa(0x8000_0000)
        self.xens: dict[str, Xen] = {}
        # Every domain ever made here, destroyed ones included: the choices of a draw must
        # not change as calls destroy domains (hypothesis replays draws).
        self.made: list[Any] = []
        self.xen = self.xen_for("partitioned")
        self.d = self.xen.domains[1]
        self.dead = self.xen.create_domain(2 * MB)
        self.xen.destroy_domain(self.dead)
        self.made.append(self.dead)
        self.run = self.xen.vlpt.run(self.d)
        d = self.d
        self.addresses = [
            0x40_0000,
            0x40_1008,
            0x60_0000,
            0x8000_0000,
            0x8010_0000,
            self.pt.root,
            self.s2.root,
            d.ram_base,
            d.ram_base + 2 * MB + 5 * PAGE,
            d.ram_end - 8,
            d.ram_end,
            d.p2m.root,
            self.xen.httbr(0),
            self.xen.vlpt.third_va(d, d.ram_base),
            self.xen.vlpt.second_va(d, d.ram_base),
            0x1000_7000,
            0x8000_0000 + 5 * PAGE,
        ]

    def xen_for(self, lookup: str) -> Xen:
        xen = self.xens.get(lookup)
        if xen is None:
            xen = self.xens[lookup] = Xen(cpus=2, pa_bits=32, tlb_entries=32, lookup=lookup)
            d = xen.create_domain(8 * MB, superpages=True)
            xen.create_domain(4 * MB)
            xen.context_switch(0, d)
            xen.logdirty.enable(d)
            xen.guest_write(d, d.ram_base + 2 * MB + 5 * PAGE, cpu=0)
            xen.vmalloc(3 * PAGE)
            self.made.extend(xen.domains.values())
        return xen

    def domains(self) -> list[Any]:
        return list(self.made)

    def state(self, relaxed: bool = False) -> Any:
        lpae = lpae_state(self.mem, [self.pt, self.s2], [] if relaxed else [self.mmu])
        xens = {name: xen_state(xen) for name, xen in self.xens.items()}
        if relaxed:  # an access that faulted: the walk it made may have filled TLBs, counted
            for s in xens.values():
                del s["mmus"], s["ledger"]
                s["strategy"].pop("mmus64", None)
        return lpae, xens


def _receivers(w: World) -> dict[str, Callable[[], Any]]:
    fault = Fault("permission", 3, 0x1000, access="write")
    translation = w.pt.walk(0x40_0000)
    return {
        "PhysicalMemory": lambda: w.mem,
        "PageTable": lambda: w.pt,
        "MMU": lambda: w.mmu,
        "TLB": lambda: w.mmu.tlb,
        "Format": lambda: ARMV7_S1,
        "S1Attrs": lambda: S1Attrs(),
        "S2Attrs": lambda: S2Attrs(),
        "S1Descriptor": lambda: S1Descriptor(),
        "S2Descriptor": lambda: S2Descriptor(),
        "Fault": lambda: fault,
        "FaultError": lambda: FaultError(fault),
        "Translation": lambda: translation,
        "StaleHit": lambda: StaleHit(0, "hyp", None, None, "read", 0, "r--", fault),
        "Xen": lambda: w.xen,
        "Hypervisor": lambda: w.xen.core,
        "Ledger": lambda: w.xen.ledger,
        "LogDirty": lambda: w.xen.logdirty,
        "Vmap": lambda: w.xen.vmap_area,
        "Domheap": lambda: w.xen.domheap,
        "XenPageTables": lambda: w.xen.pagetables,
        "P2M": lambda: w.d.stage2,
        "Domain": lambda: w.d,
        "PartitionedVLPT": lambda: w.xen.lookup,
        "SlotRun": lambda: w.run,
        "SwitchedVLPT": lambda: w.xen_for("switched").lookup,
        "DomheapWalk": lambda: w.xen_for("walk").lookup,
        "DirectMapWalk": lambda: w.xen_for("walk64").lookup,
        "HybridLookup": lambda: w.xen_for("hybrid").lookup,
        "P2MLookup": lambda: P2MLookup(),
    }


# -- the arguments ---------------------------------------------------------------------------

EDGE = [
    -1,
    0,
    1,
    2,
    3,
    7,
    8,
    0xFFF,
    0x1000,
    0x1001,
    0x20_0000,
    0x4000_0000,
    0x8000_0000,
    0x8000_1000,
    0x1_0000_0000,
    1 << 40,
    (1 << 64) - 1,
    1 << 64,
    -(1 << 63),
]
JUNK: list[Any] = [
    None,
    True,
    False,
    1.5,
    float("nan"),
    "0x1000",
    "",
    "read",
    b"\x00",
    [],
    [0x1000],
    (1, 2),
    {},
    {"x": 1},
    object(),
    1j,
]
_edge = st.sampled_from(EDGE)
_junk = st.sampled_from(JUNK)


def _with(*good: Any) -> Callable[[World], st.SearchStrategy[Any]]:
    """Valid values, edge values and junk."""
    return lambda w: st.one_of(st.sampled_from(good), _edge, _junk) if good else _anything(w)


def _anything(w: World) -> st.SearchStrategy[Any]:
    return st.one_of(_edge, _junk)


def _ints(lo: int, hi: int) -> Callable[[World], st.SearchStrategy[Any]]:
    return lambda w: st.one_of(st.integers(lo, hi), _edge, _junk)


def _from(make: Callable[[World], list[Any]]) -> Callable[[World], st.SearchStrategy[Any]]:
    """Values that depend on the world (drawn after the receiver is built), edge, junk."""
    return lambda w: st.one_of(st.sampled_from(make(w)), _edge, _junk)


def _addresses(w: World) -> list[Any]:
    return w.addresses


def _flags(w: World) -> st.SearchStrategy[Any]:
    return st.sampled_from([True, False, 0, 1, "yes", None, 1.0, []])


_SIZES = _with(PAGE, 2 * PAGE, 2 * MB, 4 * MB, 2 * MB + PAGE)
_FUNCS = _with(None, lambda *a: None, print)
_DOMAINS = _from(lambda w: [*w.domains(), None, "d1", 1])

PARAMS: dict[str, Callable[[World], st.SearchStrategy[Any]]] = {
    # addresses
    **{n: _from(_addresses) for n in ("va", "pa", "ipa", "addr", "root", "base")},
    **{n: _from(_addresses) for n in ("httbr", "vttbr", "ttbr0", "s1_root", "s2_root")},
    **{n: _from(_addresses) for n in ("address", "ipa_base", "cached_pa", "table", "ram_base")},
    "table_attrs": _with(0, 1 << 10, 3, 1 << 12, (3 << 61) | (1 << 10)),
    # sizes and counts
    **{n: _SIZES for n in ("size", "ram", "ram_size", "xenheap_size", "block_size")},
    **{n: _ints(0, 600) for n in ("n", "nr", "new_l2", "mfn", "capacity", "ceiling")},
    "align": _with(1, 2, 512, 3),
    "tlb_entries": _ints(0, 64),
    # small ints
    **{n: _ints(0, 4) for n in ("level", "start_level", "max_level_block", "stage", "s2level")},
    **{n: _ints(0, 2) for n in ("cpu", "cpus")},
    **{n: _ints(60, 130) for n in ("slot", "first_slot", "loop_slot", "nr_slots")},
    **{n: _ints(0, 2) for n in ("first_gb", "domid")},
    "index": _ints(0, 1100),
    **{n: _ints(0, 300) for n in ("vmid", "asid", "tag")},
    **{n: _with(12, 21, 30, 39, 64) for n in ("shift",)},
    "granule": _with(4096, 16384, 65536, 8192),
    **{n: _with(32, 36, 40, 48, 52, 53, 25) for n in ("ia_bits", "oa_bits", "pa_bits")},
    "va_bits": _with(48, 39, 25, 16, 65),
    "perm": _ints(0, 63),
    "s2perm": _ints(0, 7),
    "low": _with(0xFFF, 0x1F_FFFF),
    # descriptor words and fields
    **{n: _with(0, 3, 0x8010_0743, (1 << 64) - 1) for n in ("value", "desc", "descriptor")},
    **{n: _with(0, 3, 0x8010_0743) for n in ("old", "new")},
    **{
        n: _with(0, 1, 2, 3, 15, 16)
        for n in (
            "valid",
            "ap",
            "ap_table",
            "attr_indx",
            "mem_attr",
            "ns_table",
            "pxn_table",
            "res11",
            "res48_51",
            "s2ap",
            "sh",
            "sw",
            "xn0",
            "xn_table",
            "ignored59_63",
        )
    },
    # flags (fields of the attribute templates and of Fault/Translation included)
    **{
        n: _flags
        for n in (
            "user",
            "replace",
            "missing_ok",
            "clean",
            "superpage",
            "superpages",
            "logdirty",
            "stale_check",
            "enabled",
            "create",
            "reserved",
            "lazy",
            "af",
            "ng",
            "ns",
            "pxn",
            "xn",
            "contiguous",
            "readable",
            "writable",
            "executable",
            "s1ptw",
        )
    },
    # names and choices
    "access": _with("read", "write", "exec", "Read", ["read"]),
    "op": _with(*sorted(TLBI_OPS)[:6], "TLBIALLIS", "TLBI VAE2", "nope", ["TLBIALL"]),
    "kind": _with("translation", "permission", "access-flag", "address-size", "other"),
    "regime": _with("el2", "el1&0", "s2", "hyp"),
    "arch": _with("armv7", "aarch64", "x86"),
    "replacement": _with("fifo", "lru", "random"),
    "name": _with("p2m", "x", "", "d9.p2m"),
    "lookup": _with("partitioned", "walk", "nope"),
    "what": _with("call"),
    "where": _with("", "here"),
    "cached_perm": _with("rwx", "r--"),
    # objects of the model
    "fmt": _with(ARMV7_S1, ARMV7_S1_PL1, ARMV7_S2_40, AARCH64_S1_48, AARCH64_S2_PA_RANGES[40]),
    "s1_fmt": _with(ARMV7_S1_PL1, ARMV7_S2_40, AARCH64_S1_48),
    "s2_fmt": _with(ARMV7_S2_40, ARMV7_S1, AARCH64_S2_PA_RANGES[40]),
    "attrs": _with(S1Attrs(), S1Attrs(ap=2, xn=True), S2Attrs(), S2Attrs(s2ap=1)),
    "mem": _from(lambda w: [w.mem, w.xen.mem, PhysicalMemory(32)]),
    "ledger": _from(lambda w: [w.xen.ledger, Ledger()]),
    "core": _from(lambda w: [w.xen.core]),
    "tlb": _from(lambda w: [None, TLB(4), TLB(0)]),
    "other": _from(lambda w: [w.mmu, MMU(w.mem)]),
    "fault": _from(lambda w: [Fault("translation", 1, 0)]),
    "current": _from(lambda w: [w.pt.walk(0x40_0000), Fault("translation", 1, 0)]),
    "s2": _from(lambda w: [None, w.s2.walk(0x8000_0000)]),
    "reads": _with((), ((0x8000_0000, 3),)),
    "d": _DOMAINS,
    "prev": _DOMAINS,
    "next_": _DOMAINS,
    "stage2": _from(lambda w: [w.d.stage2, True, None]),
    "owner": _from(lambda w: [w.pt, object(), None]),
    "before": _from(lambda w: [w.xen.ledger.snapshot(), {}, {"x": "y"}, {1: 2}]),
    # sequences
    "mfns": _with([0x80100], [0x80100, 0x80101], range(0x80100, 0x80104), [True], ["a"], [-1]),
    "ipas": _from(lambda w: [[w.d.ram_base], [w.d.ram_base, "x"], [1.5], iter([w.d.ram_base])]),
    "values": _with([0] * 512, [1, 2, 3], [-1], ["x"], [1 << 64], range(8)),
    # callables
    **{n: _FUNCS for n in ("flush", "invalidate", "ptw")},
}
# SwitchedVLPT(flush=...) is a mode name: the same parameter draws both kinds.
PARAMS["flush"] = _with(None, lambda va, size: None, "all", "va", "auto", "some")


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls") or p.name.startswith("_"):
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(p)
    return out


def _target(w: World, kind: str, owner: Any, name: str) -> tuple[Callable[..., Any], list[Any]]:
    """The callable to fuzz and its parameters (a property: its getter, or its setter)."""
    if kind == "function":
        return owner, _parameters(owner)
    if kind == "new":
        return owner, _parameters(owner)
    if kind in ("classmethod", "staticmethod"):
        fn = getattr(owner, name)
        return fn, _parameters(fn)
    receiver = _receivers(w)[owner.__name__]()
    if kind == "property":
        prop = vars(owner)[name]
        if prop.fset is None:
            return (lambda: getattr(receiver, name)), []

        def get_or_set(*value: Any) -> Any:
            if value:
                return setattr(receiver, name, value[0])
            return getattr(receiver, name)

        setter = _parameters(prop.fset)
        return get_or_set, setter
    fn = getattr(receiver, name)
    return fn, _parameters(fn)


#: Calls that make memory accesses: a fault is an answer there, and the walk it made counts.
ACCESSES = {
    "guest_write",
    "guest_read",
    "guest_write_many",
    "read_va",
    "write_va",
}

FUZZED = sorted(set(public_callables()) - set(EXEMPT))
#: Examples per callable: a dozen in CI (about 3,000 calls in all, a few seconds on 2 cores),
#: the profile's number otherwise (``HYPOTHESIS_PROFILE=fuzz`` for a long campaign).
EXAMPLES = 12 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else settings().max_examples


@pytest.mark.parametrize("key", FUZZED)
def test_fuzz(key: str) -> None:
    kind, owner, name = public_callables()[key]
    w = World()

    @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        fn, params = _target(w, kind, owner, name)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p in params:
            if p.name not in PARAMS:
                raise AssertionError(f"{key}: no strategy for parameter {p.name!r} (add to PARAMS)")
            if p.default is not p.empty and data.draw(st.booleans(), label=f"default {p.name}"):
                continue  # leave it out: the default with the others drawn
            value = data.draw(PARAMS[p.name](w), label=p.name)
            if p.kind == p.KEYWORD_ONLY:
                kwargs[p.name] = value
            else:
                args.append(value)
        before = w.state()
        relaxed_before = w.state(relaxed=True)
        try:
            fn(*args, **kwargs)
        except VAAllocError as error:
            relaxed = isinstance(error, FaultError) or (
                name in ACCESSES and isinstance(error, MappingError)
            )
            if relaxed:
                assert w.state(relaxed=True) == relaxed_before, f"{key} raised {error!r}"
            else:
                assert w.state() == before, f"{key}{args, kwargs} raised {error!r} and changed"
        except Exception as error:
            raise AssertionError(f"{key}{args, kwargs} raised {error!r}") from error

    run()
