"""Protection in the VM table model (issue 16): the rpo: and policy: filter terms, sorting worst first, the
summary's protection counts, and policies that cannot select by protection. Expectations by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fctui.inventory.query import (FilterError, RowStore, ViewCache, VmRow, compute_view, parse_filter,
                                   sort_rows, summarize)
from fctui.jobs.policy import PolicyError, policy_from_mapping


def row(name: str, protection: str = "", policy: str = "", verdict: str = "ready") -> VmRow:
    return VmRow(key=f"urn:sites:S:vms:i-{name}", name=name, state="running", host="cna-01", cluster="c1",
                 disks=1, size_gb=40, tools="running", verdict=verdict, reason="", protection=protection,
                 policy=policy)


ROWS = [
    row("db-01", "ok", "db-nightly"),
    row("db-02", "breached", "db-nightly"),
    row("web-01", "at-risk", "web-daily"),
    row("web-02", "ok", "DB-hourly"),        # another policy whose name also starts with "db"
    row("tmp-01", "not-covered"),
    row("tmp-02", "not-covered"),
    row("new-01"),                            # not assessed yet
]


def names(flt: str, rows=ROWS) -> list[str]:
    f = parse_filter(flt)
    return sorted(r.name for r in rows if f.matches(r))


@pytest.mark.parametrize("flt, expected", [
    ("rpo:ok", ["db-01", "web-02"]),
    ("rpo:breached", ["db-02"]),
    ("rpo:b", ["db-02"]),                            # by prefix, as verdict:
    ("rpo:at-risk", ["web-01"]),
    ('rpo:"at risk"', ["web-01"]),                   # the column's words work too
    ("rpo:none", ["tmp-01", "tmp-02"]),
    ("rpo:not-covered", ["tmp-01", "tmp-02"]),
    ("rpo:unknown", ["new-01"]),
    ("RPO:OK", ["db-01", "web-02"]),
    ("!rpo:ok", ["db-02", "new-01", "tmp-01", "tmp-02", "web-01"]),
    ("!rpo:none", ["db-01", "db-02", "new-01", "web-01", "web-02"]),
    ("policy:db-nightly", ["db-01", "db-02"]),
    ("policy:db", ["db-01", "db-02", "web-02"]),     # prefix, case-insensitive
    ("policy:web", ["web-01"]),
    ("policy:none", ["tmp-01", "tmp-02"]),            # not covered; not the unassessed row
    ("!policy:none", ["db-01", "db-02", "new-01", "web-01", "web-02"]),
    ("!policy:db", ["new-01", "tmp-01", "tmp-02", "web-01"]),
    ("policy:nightly", []),                           # a prefix, not a substring
    ("policy:db rpo:ok", ["db-01", "web-02"]),
    ("db rpo:breached", ["db-02"]),
])
def test_rpo_and_policy_terms(flt: str, expected: list[str]) -> None:
    assert names(flt) == expected


def test_an_unknown_rpo_state_is_a_clear_error() -> None:
    with pytest.raises(FilterError, match="rpo: wants ok, at-risk, breached or none"):
        parse_filter("rpo:late")


def test_protection_and_policy_are_not_plain_text() -> None:
    """A policy selects VMs with this language; plain text matching its own result would be circular."""
    assert names("nightly") == []
    assert names("breached") == []
    assert names("re:^ok$") == []


def test_sorting_by_protection_puts_the_worst_first() -> None:
    order = [r.name for r in sort_rows(ROWS, "protection")]
    assert order == ["tmp-01", "tmp-02", "db-02", "web-01", "db-01", "web-02", "new-01"]


def test_summary_counts_protection_problems_before_the_rules() -> None:
    rows = [*ROWS, row("x-01", "not-covered", verdict="blocked")]
    rows[-1].rules = ("tools-missing",)
    s = summarize(rows)
    assert s.by_protection == {"ok": 2, "breached": 1, "at-risk": 1, "not-covered": 3}
    assert s.items() == [("verdict:blocked", 1), ("verdict:degraded", 0), ("verdict:ready", 7),
                         ("rpo:none", 3), ("rpo:breached", 1), ("rpo:at-risk", 1), ("rule:tools-missing", 1)]
    # each entry selects exactly that many rows
    for expr, n in s.items():
        assert len(names(expr, rows)) == n
    # only non-zero items: all ok (or not assessed) shows no protection entry
    s = summarize([row("a", "ok"), row("b")])
    assert [e for e, _ in s.items() if e.startswith("rpo:")] == []


def test_a_protection_change_is_a_display_change_that_keeps_the_marks() -> None:
    store = RowStore()
    store.upsert([row("db-01"), row("db-02")])
    store.marks.add(ROWS[0].key)
    gen = store.generation
    from dataclasses import replace
    added, changed = store.upsert([replace(store.rows[ROWS[0].key], protection="ok", policy="db-nightly")])
    assert (added, changed) == (0, 1) and store.generation == gen + 1
    assert store.marks == {ROWS[0].key}
    assert store.rows[ROWS[0].key].confirmed().protection == "ok"     # confirming keeps it
    assert store.rows[ROWS[0].key].confirmed().policy == "db-nightly"


@pytest.mark.parametrize("vms", ["rpo:none", "re:^db- !policy:none", "policy:x"])
def test_a_policy_cannot_select_by_protection(vms: str) -> None:
    with pytest.raises(PolicyError, match="cannot select VMs by their protection"):
        policy_from_mapping({"name": "p", "vms": vms, "schedule": "daily 01:00", "rpo": "24h"})


def test_no_policy_may_be_named_none() -> None:
    with pytest.raises(PolicyError, match="reserved"):
        policy_from_mapping({"name": "None", "vms": "re:^db-", "schedule": "daily 01:00", "rpo": "24h"})


STATES = st.sampled_from(["ok", "at-risk", "breached", "not-covered", ""])
POLICIES = st.sampled_from(["", "db-nightly", "db", "web-daily", "DB-x"])
TERMS = st.sampled_from(["rpo:ok", "!rpo:ok", "rpo:b", "rpo:none", "!rpo:none", "rpo:unknown", "policy:db",
                         "!policy:db", "policy:none", "!policy:none", "policy:web-daily", "rpo:re:risk",
                         "policy:re:^db", "db", "verdict:r"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(STATES, POLICIES), max_size=10), st.lists(TERMS, max_size=3),
       st.sampled_from(["name", "protection"]), st.booleans())
def test_the_view_cache_picks_what_the_row_filter_picks(spec, terms, sort, rev) -> None:
    rs = [row(f"vm-{i}", state, pol if state not in ("", "not-covered") else "") for i, (state, pol) in enumerate(spec)]
    flt = parse_filter(" ".join(terms))
    cache = ViewCache()
    assert cache.is_cheap(flt, sort, rev, 1) is False          # nothing sorted yet
    view, _ = cache.compute(rs, frozenset(), flt, sort, rev, 1)
    assert view.keys == compute_view(rs, frozenset(), flt, sort, rev, 1).keys
    # the terms are answered a set at a time (no call per row)
    assert cache.is_cheap(flt, sort, rev, 1)
