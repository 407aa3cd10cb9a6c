"""The VM table model: filter language, sorting, summary, keyed store (pure, no TUI)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fctui.inventory.query import (COLUMN_IDS, FilterError, RowStore, ViewCache, VmRow, compute_view,
                                   parse_filter, row_from_vm, sort_rows, summarize)
from fctui.vrm.models import Vm


def row(name: str, *, state: str = "running", host: str = "cna-01", verdict: str = "ready",
        rules: tuple[str, ...] = (), disks: int = 1, size: int = 40, reason: str = "", tools: str = "running",
        cluster: str = "cluster-01") -> VmRow:
    return VmRow(key=f"urn:sites:S:vms:i-{name}", name=name, state=state, host=host, cluster=cluster,
                 disks=disks, size_gb=size, tools=tools, verdict=verdict, reason=reason, rules=rules)


ROWS = [
    row("erp-db-01", verdict="blocked", rules=("disk-ide",), reason="disk-ide: IDE bus", host="cna-03", size=500),
    row("erp-db-02", verdict="degraded", state="stopped", rules=("state-stopped",), reason="state-stopped: off",
        disks=3, size=300),
    row("web-nginx-07", rules=("consistency-not-euleros",), reason="consistency-not-euleros: crash only",
        host="cna-03", size=20),
    row("tmpl-base", verdict="blocked", state="stopped", rules=("template", "state-stopped"),
        reason="template: a template", disks=2, size=80),
    row("Mail-01", host="cna-12", size=1000, disks=6),
]


def names(flt: str, rows=ROWS, marks=frozenset()) -> list[str]:
    f = parse_filter(flt)
    return sorted(r.name for r in rows if f.matches(r, marks))


def test_plain_text_is_case_insensitive_substring_over_visible_columns():
    assert names("ERP") == ["erp-db-01", "erp-db-02"]
    assert names("cna-03") == ["erp-db-01", "web-nginx-07"]
    assert names("crash") == ["web-nginx-07"]        # main reason is searched too
    assert names("") == sorted(r.name for r in ROWS)


def test_terms_are_anded_and_quotes_group_words():
    assert names("erp stopped") == ["erp-db-02"]
    assert names('reason:"crash only"') == ["web-nginx-07"]


def test_regex_forms():
    assert names(r"re:^erp-db-\d+") == ["erp-db-01", "erp-db-02"]
    assert names("/nginx|mail/") == ["Mail-01", "web-nginx-07"]
    assert names("name:re:^e") == ["erp-db-01", "erp-db-02"]


def test_a_regex_anchors_and_matches_within_one_field():
    """Issue 15 (tried in tmux): ``re:^erp-db-01$`` matched nothing, because ``$`` anchored the end of all
    the row's fields joined together; and ``.`` ran from one field into the next."""
    assert names("re:^erp-db-01$") == ["erp-db-01"]
    assert names("re:^cna-03$") == ["erp-db-01", "web-nginx-07"]   # a host is a field too
    assert names("re:db-01.*cna-03") == []                  # name and host are not one text
    assert names("re:^STOPPED$") == ["erp-db-02", "tmpl-base"]


def test_inverse():
    assert names("!erp") == ["Mail-01", "tmpl-base", "web-nginx-07"]
    assert names("!verdict:blocked") == ["Mail-01", "erp-db-02", "web-nginx-07"]
    assert names("!re:db") == ["Mail-01", "tmpl-base", "web-nginx-07"]


def test_column_qualified_terms():
    assert names("verdict:blocked") == ["erp-db-01", "tmpl-base"]
    assert names("verdict:deg") == ["erp-db-02"]                 # prefix
    assert names("rule:disk-ide") == ["erp-db-01"]
    assert names("rule:state-") == ["erp-db-02", "tmpl-base"]     # rule prefix
    assert names("rule:state") == ["erp-db-02", "tmpl-base"]
    assert names("host:cna-03") == ["erp-db-01", "web-nginx-07"]
    assert names("host:cna-1") == ["Mail-01"]
    assert names("state:stopped") == ["erp-db-02", "tmpl-base"]
    assert names("name:mail") == ["Mail-01"]
    assert names("cluster:cluster-01") == sorted(r.name for r in ROWS)


def test_numeric_terms():
    assert names("disks:>2") == ["Mail-01", "erp-db-02"]
    assert names("disks:2") == ["tmpl-base"]
    assert names("size:>=500") == ["Mail-01", "erp-db-01"]
    assert names("size:<50") == ["web-nginx-07"]
    with pytest.raises(FilterError, match="number"):
        parse_filter("size:big")


def test_marked_term():
    marks = frozenset({ROWS[0].key, ROWS[4].key})
    assert names("marked:yes", marks=marks) == ["Mail-01", "erp-db-01"]
    assert names("marked:no", marks=marks) == ["erp-db-02", "tmpl-base", "web-nginx-07"]


@pytest.mark.parametrize("bad,why", [("re:(", "regular expression"), ("/[a-/", "regular expression"),
                                     ('name:"open', "quotes"), ("!", "needs a term"),
                                     ("colour:", "unknown column")])
def test_bad_filters_give_a_readable_error(bad, why):
    with pytest.raises(FilterError, match=why):
        parse_filter(bad)


def test_unknown_qualifier_with_value_is_plain_text():
    # "http://x" or "a:b" are not columns: search them as text rather than refusing
    assert names("foo:bar") == []


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_input_parses_or_raises_filter_error(text):
    try:
        f = parse_filter(text)
    except FilterError:
        return
    # terms are ANDed: one more plain term narrows the match to the rows that also hold it
    g = parse_filter(text + " erp")
    for r in ROWS:
        assert f.matches(r, frozenset()) in (True, False)
        assert g.matches(r, frozenset()) == (f.matches(r, frozenset()) and _oracle(["erp"], r))
    # one token (no space, quote or leading "!"): "!" in front matches exactly the other rows
    if text and not any(c.isspace() or c in "\"'!" for c in text) and len(f.terms) == 1:
        n = parse_filter("!" + text)
        for r in ROWS:
            assert n.matches(r, frozenset()) == (not f.matches(r, frozenset()))


# Plain words against an oracle written here: a row matches when every word is a case-insensitive
# substring of one of its visible columns (name, host, state, verdict, main reason, cluster) or its URN.
_WORD = st.text(alphabet="abcdeilmnoprstuwx0123-", min_size=1, max_size=4)


def _oracle(words: list[str], r: VmRow) -> bool:
    fields = [r.name, r.host, r.state, r.verdict, r.reason, r.cluster, r.key]
    return all(any(w.lower() in x.lower() for x in fields) for w in words)


@given(st.lists(st.tuples(_WORD, st.booleans()), max_size=3))
@settings(max_examples=120, deadline=None)
def test_plain_words_match_like_the_oracle(words):
    text = " ".join(w.upper() if up else w for w, up in words)
    f = parse_filter(text)
    for r in ROWS:
        assert f.matches(r, frozenset()) == _oracle([w for w, _ in words], r), (text, r.name)


def test_sort_by_every_column_and_reverse():
    for col in COLUMN_IDS:
        asc = sort_rows(ROWS, col)
        desc = sort_rows(ROWS, col, reverse=True)
        assert [r.key for r in asc] == [r.key for r in reversed(desc)]
    assert [r.name for r in sort_rows(ROWS, "verdict")][:2] == ["erp-db-01", "tmpl-base"]   # worst first
    assert [r.size_gb for r in sort_rows(ROWS, "size")] == [20, 80, 300, 500, 1000]
    assert [r.name for r in sort_rows(ROWS, "name")][0] == "erp-db-01"
    with pytest.raises(FilterError):
        sort_rows(ROWS, "colour")


def test_summary_counts_per_verdict_and_rule():
    s = summarize(ROWS)
    assert s.total == 5
    assert s.by_verdict == {"blocked": 2, "degraded": 1, "ready": 2}
    assert s.by_rule["state-stopped"] == 2
    # blockers (disk-ide, template: product document) before the warning, the info last; most frequent
    # first within a severity
    assert list(s.by_rule) == ["disk-ide", "template", "state-stopped", "consistency-not-euleros"]
    more = summarize([*ROWS, row("erp-db-03", verdict="blocked", rules=("template",), reason="template: t")])
    assert list(more.by_rule)[:2] == ["template", "disk-ide"]
    items = s.items()
    assert items[:3] == [("verdict:blocked", 2), ("verdict:degraded", 1), ("verdict:ready", 2)]
    # every summary entry is itself a filter selecting exactly that many rows
    for expr, n in items:
        assert len(names(expr)) == n


def test_store_is_keyed_and_keeps_marks():
    store = RowStore()
    assert store.upsert(ROWS) == (5, 0)
    g = store.generation
    assert store.upsert(ROWS) == (0, 0) and store.generation == g         # nothing changed: no new view
    store.toggle_mark(ROWS[1].key)
    changed = row("erp-db-02", verdict="ready", state="running")
    assert store.upsert([changed]) == (0, 1)
    assert store.get(changed.key).verdict == "ready" and ROWS[1].key in store.marks
    assert store.retain([r.key for r in ROWS if r.name != "erp-db-02"]) == 1
    assert ROWS[1].key not in store.marks and len(store) == 4


def test_compute_view_and_cache_agree():
    cache = ViewCache()
    for flt in ("", "erp", "!verdict:ready", "rule:state-"):
        for sort in ("name", "size", "verdict"):
            for rev in (False, True):
                v1 = compute_view(ROWS, frozenset(), flt, sort, rev, 1)
                v2, summary = cache.compute(ROWS, frozenset(), flt, sort, rev, 1)
                assert v1.keys == v2.keys
                assert summary.total == 5


def test_row_from_vm_model_and_assessment():
    vm = Vm.from_dict({
        "urn": "urn:sites:S:vms:i-1", "name": "db-01", "status": "running", "pvDriverStatus": "running",
        "toolsVersion": "2.5", "hostName": "cna-02", "isTemplate": False, "isLinkClone": False,
        "vmConfig": {"disks": [{"quantityGB": 40, "pciType": "VIRTIO", "sequenceNum": 1},
                               {"quantityGB": 60, "pciType": "IDE", "sequenceNum": 2}]},
    })

    class F:
        def __init__(self, rule, severity, message):
            self.rule, self.severity, self.message = rule, severity, message

    class A:
        verdict = "blocked"
        findings = [F("disk-ide", "blocker", "disk 2 is on IDE"), F("consistency-not-euleros", "info", "x")]
        main_reason = findings[0]

    r = row_from_vm(vm, A())
    assert (r.name, r.host, r.disks, r.size_gb, r.tools, r.verdict) == ("db-01", "cna-02", 2, 100, "running", "blocked")
    assert r.rules == ("disk-ide", "consistency-not-euleros")
    assert r.reason == "disk-ide: disk 2 is on IDE"
    bare = row_from_vm(Vm.from_dict({"urn": "urn:x", "name": "odd"}))
    assert bare.verdict == "" and bare.tools == "?" and bare.disks == 0
