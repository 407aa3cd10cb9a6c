"""The view cache answers plain-text and column terms a set at a time; it must pick exactly the rows
the per-row filter picks, in the same order, for any rows and any filter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fctui.inventory.query import FilterError, ViewCache, VmRow, compute_view, parse_filter

WORDS = st.sampled_from(["erp", "db", "-0", "a", "blocked", "ready", "cna-03", "stopped", "ide", "x\ny", ""])
TEXT = st.lists(WORDS, max_size=3).map("".join)


@st.composite
def rows(draw: st.DrawFn) -> list[VmRow]:
    out = []
    for i in range(draw(st.integers(0, 12))):
        out.append(VmRow(key=f"urn:sites:S:vms:i-{i}", name=draw(TEXT), state=draw(st.sampled_from(
            ["running", "stopped", "Stopped"])), host=draw(TEXT), cluster=draw(TEXT), disks=draw(st.integers(0, 3)),
            size_gb=draw(st.integers(0, 500)), tools=draw(st.sampled_from(["running", "none", "?"])),
            verdict=draw(st.sampled_from(["ready", "degraded", "blocked", ""])), reason=draw(TEXT),
            rules=tuple(draw(st.lists(st.sampled_from(["disk-ide", "state-stopped"]), max_size=2)))))
    return out


FILTER_TERMS = st.sampled_from([
    "erp", "ERP", "db", "-0", "a", "!a", "verdict:b", "!verdict:ready", "state:stop", "host:cna", "name:re:^e",
    "reason:ide", "rule:disk", "size:>100", "disks:2", "re:erp.*db", "/x$/", "marked:yes", "!name:a", "cna-03",
    "urn:i-1", "tools:run", "d\x00s",
])


@settings(max_examples=300, deadline=None)
@given(rows(), st.lists(FILTER_TERMS, max_size=3), st.sampled_from(["name", "verdict", "size"]), st.booleans())
def test_cache_picks_what_the_row_filter_picks(rs: list[VmRow], terms: list[str], sort: str, rev: bool) -> None:
    text = " ".join(terms)
    marks = frozenset(r.key for r in rs[::2])
    cache = ViewCache()
    try:
        flt = parse_filter(text)
    except FilterError:
        return
    view, _ = cache.compute(rs, marks, flt, sort, rev, 1)
    assert view.keys == compute_view(rs, marks, flt, sort, rev, 1).keys
    # a second keystroke on the same generation reuses the cached haystack and groups
    narrower = parse_filter(text + " e")
    view2, _ = cache.compute(rs, marks, narrower, sort, rev, 1)
    assert view2.keys == compute_view(rs, marks, narrower, sort, rev, 1).keys


def test_a_new_generation_drops_the_cached_haystack() -> None:
    a = VmRow(key="k1", name="alpha", state="running", host="h", cluster="c", disks=1, size_gb=1,
              tools="running", verdict="ready", reason="")
    b = VmRow(key="k2", name="beta", state="running", host="h", cluster="c", disks=1, size_gb=1,
              tools="running", verdict="blocked", reason="")
    cache = ViewCache()
    assert cache.compute([a], frozenset(), parse_filter("beta"), "name", False, 1)[0].keys == ()
    assert cache.compute([a, b], frozenset(), parse_filter("beta"), "name", False, 2)[0].keys == ("k2",)
    assert cache.compute([a, b], frozenset(), parse_filter("verdict:b"), "name", False, 2)[0].keys == ("k2",)


def test_confirming_rows_drops_the_question_mark_only() -> None:
    """Confirming flips ``provisional`` in place and nothing else; the generation stays, so the view
    computed before is still right."""
    from fctui.inventory.query import RowStore, VmRow, compute_view

    def row(key: str, verdict: str, provisional: bool) -> VmRow:
        return VmRow(key, key, "running", "cna-01", "c1", 1, 10, "running", verdict, "", (), provisional=provisional)

    store = RowStore()
    store.upsert([row("a", "ready", True), row("b", "blocked", True), row("c", "ready", False)])
    gen = store.generation
    before = {k: (r.key, r.verdict, r.reason, r.rules, r.search) for k, r in store.rows.items()}
    view = compute_view(list(store.rows.values()), frozenset(), "verdict:ready", "name", False, gen)
    assert store.confirm(["a", "c", "missing"]) == 1
    assert store.generation == gen
    assert [r.provisional for r in store.rows.values()] == [False, True, False]
    assert {k: (r.key, r.verdict, r.reason, r.rules, r.search) for k, r in store.rows.items()} == before
    assert compute_view(list(store.rows.values()), frozenset(), "verdict:ready", "name", False, gen).keys == view.keys
