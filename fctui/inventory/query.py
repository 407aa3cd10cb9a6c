"""The VM table's model, headless: rows, the filter language, sorting and the summary counts.

Pure Python (no textual, no I/O) so it is unit-testable and cheap enough to run in a thread worker
over 10,000 rows on every keystroke. The TUI keeps one :class:`RowStore` outside any widget; the
table widget only ever renders the list of keys a :class:`View` computes.

Filter language (``/`` in the TUI), terms separated by spaces, all must match (AND):

* ``erp``            plain text: case-insensitive substring of name, host, state, verdict or reason
* ``re:^db-\\d+$``   regular expression (also ``/…/``) over each of the same fields: ``^`` and ``$``
  anchor a field (``re:^db-01$`` is the VM named db-01, or a host of that name)
* ``!term``          inverse of any term (``!verdict:ready``, ``!re:test``)
* ``col:value``      column-qualified: ``name: state: host: cluster: verdict: rule: tools: reason:
  urn: os: arch:`` (substring; ``rule:`` matches a rule id exactly or by prefix, ``verdict:``/``state:``
  by prefix) and ``disks:``/``size:`` with ``>N``, ``<N``, ``>=N``, ``<=N`` or ``N``
* ``rpo:STATE``      protection by a policy: ``rpo:ok``, ``rpo:at-risk``, ``rpo:breached`` (by prefix:
  ``rpo:b``) and ``rpo:none`` for a VM no policy covers (``rpo:unknown``: not assessed yet)
* ``policy:NAME``    the policy that protects the VM (the one that wins), by exact name or prefix;
  ``policy:none`` is a VM no policy covers. Neither protection nor policy is in the plain-text
  haystack: a policy's selector is written in this language, and must not match on its own result
* ``marked:yes``     only marked rows (the marks live in the store)
* ``site:LABEL``     the VMs of one VRM of a multi-site console, by its label (profile name), exactly
* quotes group words: ``reason:"no tools"``
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

VERDICTS = ("blocked", "degraded", "ready")
# Worst first: sorting by verdict puts what needs attention on top.
VERDICT_ORDER = {"blocked": 0, "degraded": 1, "ready": 2, "": 3}
SEVERITY_ORDER = {"blocker": 0, "warning": 1, "info": 2}
SNAPSHOTS_UNKNOWN = "snapshots-unknown"   # the rule of a provisional verdict (snapshot tree not read yet)
# A VM's protection (fctui.jobs.protection states), worst first; "" is not assessed yet (or unknown)
PROTECTION_STATES = ("not-covered", "breached", "at-risk", "ok")
PROTECTION_ORDER = {"not-covered": 0, "breached": 1, "at-risk": 2, "ok": 3, "": 4}
# words of rpo:… that are not a state's own name
_RPO_ALIASES = {"none": "not-covered", "unknown": ""}


class FilterError(ValueError):
    """A filter expression that cannot be understood; ``str()`` is a one-line reason for the user."""


@dataclass(slots=True)
class VmRow:
    """One line of the VM table: display values precomputed once per refresh, not per frame."""
    key: str              # the VM URN: stable across refreshes so cursor and marks survive
    name: str
    state: str
    host: str
    cluster: str
    disks: int
    size_gb: int
    tools: str
    verdict: str          # "ready" | "degraded" | "blocked" | "" (not assessed yet)
    reason: str           # the main reason, one line
    rules: tuple[str, ...] = ()
    os: str = ""
    arch: str = ""
    provisional: bool = False   # assessed without snapshot data yet (first pages of a refresh)
    search: str = field(default="", repr=False)  # lower-cased haystack for plain text terms
    protection: str = ""        # PROTECTION_STATES or "" (not assessed yet / unknown)
    policy: str = ""            # the policy that protects it ("" when none or unknown)
    site: str = ""              # the label of the VRM it lives on (the profile name; see InventoryFeed)

    def __post_init__(self) -> None:
        if not self.search:
            # one field per line: a regex's ^ and $ anchor a field and its . never spans two
            self.search = "\n".join((self.name, self.host, self.state, self.verdict,
                                       self.reason, self.cluster, self.key)).lower()

    def confirmed(self) -> "VmRow":
        """This row with its provisional verdict made final (see ``rules.engine.confirmed``)."""
        return VmRow(self.key, self.name, self.state, self.host, self.cluster, self.disks, self.size_gb,
                     self.tools, self.verdict, self.reason, self.rules, self.os, self.arch, False, self.search,
                     self.protection, self.policy, self.site)

    def same_display(self, other: "VmRow") -> bool:
        return (self.name, self.state, self.host, self.disks, self.size_gb, self.tools,
                self.verdict, self.reason, self.rules, self.provisional, self.protection, self.policy,
                self.site) == (
                other.name, other.state, other.host, other.disks, other.size_gb, other.tools,
                other.verdict, other.reason, other.rules, other.provisional, other.protection, other.policy,
                other.site)


def _tools_text(vm: Any) -> str:
    version = getattr(vm, "tools_version", None)
    if version is None:
        return "?"
    if version == "":
        return "none"
    pv = getattr(vm, "pv_driver_status", "") or ""
    return "running" if pv == "running" else (pv or "installed")


def _finding_text(f: Any) -> str:
    if f is None:
        return ""
    if isinstance(f, str):
        return f
    rule = getattr(f, "rule", "")
    msg = getattr(f, "message", "") or ""
    return f"{rule}: {msg}" if rule and msg else (rule or msg)


def row_from_vm(vm: Any, assessment: Any | None = None, *, provisional: bool = False,
                os_name: str = "", site: str = "") -> VmRow:
    """Build a row from a :class:`fctui.vrm.models.Vm` and its rules assessment (duck-typed)."""
    verdict = ""
    reason = ""
    rules: tuple[str, ...] = ()
    if assessment is not None:
        verdict = str(getattr(assessment, "verdict", "") or "")
        findings = list(getattr(assessment, "findings", None) or ())
        main = getattr(assessment, "main_reason", None)
        if provisional:
            # the "?" after the verdict says the snapshot tree is not read yet; the row shows what the
            # final verdict will keep, so confirming it only drops the "?" (VmRow.confirmed)
            findings = [f for f in findings if getattr(f, "rule", "") != SNAPSHOTS_UNKNOWN]
            main = findings[0] if findings and main is not None else None
        rules = tuple(dict.fromkeys(str(getattr(f, "rule", "")) for f in findings if getattr(f, "rule", "")))
        if main is None and findings:
            main = min(findings, key=lambda f: SEVERITY_ORDER.get(getattr(f, "severity", ""), 9))
        # the main reason is a blocker or a warning; info findings (e.g. crash-consistent backups of a
        # non-EulerOS guest) are for the detail, else most ready rows would look like they had a problem
        if main is not None and getattr(main, "severity", "") == "info":
            main = None
        reason = _finding_text(main)
    disks = list(getattr(vm, "disks", None) or ())
    return VmRow(
        key=vm.urn, name=vm.name, state=vm.status, host=vm.host_name or vm.host_urn.rsplit(":", 1)[-1],
        cluster=getattr(vm, "cluster_name", "") or "", disks=len(disks),
        size_gb=sum(d.quantity_gb or 0 for d in disks), tools=_tools_text(vm),
        verdict=verdict, reason=reason, rules=rules, os=os_name, arch=getattr(vm, "arch", "") or "",
        provisional=provisional, site=site,
    )


# --- columns and sorting --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Column:
    id: str
    title: str
    width: int            # cells; for name and reason the least they get (the table's layout grows them)
    align: str = "left"
    priority: int = 0     # 0: always shown; others by rank while the main reason stays readable
    flex: bool = False    # takes the remaining width


COLUMNS: tuple[Column, ...] = (
    Column("name", "Name", 16),
    Column("state", "State", 10, priority=1),
    Column("host", "Host", 8, priority=2),
    Column("disks", "Dsk", 3, "right", priority=3),
    Column("size", "Size", 6, "right", priority=4),
    Column("tools", "Tools", 10, priority=5),
    Column("verdict", "Verdict", 10),
    # always shown: "what is not protected" is the first question at 3 a.m. (9 cells: "BREACHED")
    Column("protection", "Protected", 9),
    Column("reason", "Main reason", 40, flex=True),
)
COLUMN_IDS = tuple(c.id for c in COLUMNS)
# Only with several VRMs in the console (VmTable.show_site): one site's screens stay as they were.
SITE_COLUMN = Column("site", "Site", 8)

_SORT_KEYS: dict[str, Callable[[VmRow], Any]] = {
    "name": lambda r: (r.name.lower(), r.key),
    "site": lambda r: (r.site.lower(), r.name.lower(), r.key),
    "state": lambda r: (r.state, r.name.lower()),
    "host": lambda r: (r.host, r.name.lower()),
    "disks": lambda r: (r.disks, r.name.lower()),
    "size": lambda r: (r.size_gb, r.name.lower()),
    "tools": lambda r: (r.tools, r.name.lower()),
    "verdict": lambda r: (VERDICT_ORDER.get(r.verdict, 3), r.reason, r.name.lower()),
    "protection": lambda r: (PROTECTION_ORDER.get(r.protection, 4), r.name.lower()),
    "reason": lambda r: (r.reason == "", r.reason, r.name.lower()),
}


def sort_rows(rows: Iterable[VmRow], column: str = "name", reverse: bool = False) -> list[VmRow]:
    try:
        key = _SORT_KEYS[column]
    except KeyError:
        raise FilterError(f"cannot sort by {column!r}; columns: {', '.join(COLUMN_IDS)}") from None
    return sorted(rows, key=key, reverse=reverse)


# --- the filter language ----------------------------------------------------------------------------

QUALIFIERS = ("name", "state", "host", "cluster", "verdict", "rule", "tools", "reason", "urn",
              "os", "arch", "disks", "size", "marked", "rpo", "policy", "site")
# the qualifiers that read a VM's protection (a policy's selector may not use them: see Policy)
PROTECTION_QUALIFIERS = ("rpo", "policy")

Predicate = Callable[[VmRow, frozenset[str]], bool]


@dataclass(frozen=True, slots=True)
class Term:
    text: str          # as typed (for display)
    negate: bool
    test: Predicate
    # Set-at-a-time forms of ``test`` that :class:`ViewCache` uses instead of calling it per row:
    plain: str | None = None                          # substring of the lower-cased ``search`` haystack
    column: str | None = None                         # a VmRow attribute (str) whose value ``value_test`` checks
    value_test: Callable[[str], bool] | None = None

    def __call__(self, row: VmRow, marks: frozenset[str]) -> bool:
        return self.test(row, marks) != self.negate


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter: every term must hold. The empty filter matches everything."""
    source: str
    terms: tuple[Term, ...]

    def matches(self, row: VmRow, marks: frozenset[str] = frozenset()) -> bool:
        for t in self.terms:
            if not t(row, marks):
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.terms)


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    except re.error as e:
        raise FilterError(f"bad regular expression {pattern!r}: {e}") from None


def _number_test(field_name: str, spec: str) -> Callable[[VmRow, frozenset[str]], bool]:
    m = re.fullmatch(r"\s*(>=|<=|>|<|=)?\s*(\d+)\s*", spec)
    if not m:
        raise FilterError(f"{field_name}: wants a number, optionally with > < >= <= (got {spec!r})")
    op, n = m.group(1) or "=", int(m.group(2))
    attr = "disks" if field_name == "disks" else "size_gb"
    ops: dict[str, Callable[[int], bool]] = {
        "=": lambda v: v == n, ">": lambda v: v > n, "<": lambda v: v < n,
        ">=": lambda v: v >= n, "<=": lambda v: v <= n,
    }
    f = ops[op]
    return lambda r, _m: f(getattr(r, attr))


_TEXT_ATTRS = {"reason": "reason", "name": "name", "host": "host", "cluster": "cluster", "tools": "tools",
               "urn": "key", "os": "os", "arch": "arch", "state": "state", "verdict": "verdict",
               "rpo": "protection", "policy": "policy", "site": "site"}


def _text_attr(qual: str) -> Callable[[VmRow], str]:
    attr = _TEXT_ATTRS[qual]
    return lambda r: getattr(r, attr)


def _parse_term(token: str) -> Term:
    raw = token
    negate = False
    if token.startswith("!"):
        negate, token = True, token[1:]
    if not token:
        raise FilterError("'!' needs a term after it (e.g. !verdict:ready)")
    # /regex/ or re:regex over the plain-text haystack
    if len(token) >= 2 and token.startswith("/") and token.endswith("/"):
        rx = _compile_regex(token[1:-1])
        return Term(raw, negate, lambda r, _m: rx.search(r.search) is not None)
    if token.startswith("re:"):
        rx = _compile_regex(token[3:])
        return Term(raw, negate, lambda r, _m: rx.search(r.search) is not None)
    qual, sep, value = token.partition(":")
    if sep and qual.lower() in QUALIFIERS:
        qual = qual.lower()
        if qual in ("disks", "size"):
            return Term(raw, negate, _number_test(qual, value))
        if qual == "marked":
            want = value.lower() not in ("no", "false", "0", "n")
            return Term(raw, negate, lambda r, m: (r.key in m) == want)
        if value.startswith(("re:", "/")):
            body = value[3:] if value.startswith("re:") else value.strip("/")
            rx = _compile_regex(body)
            if qual == "rule":
                return Term(raw, negate, lambda r, _m: any(rx.search(x) for x in r.rules))
            get = _text_attr(qual)
            return Term(raw, negate, lambda r, _m: rx.search(get(r)) is not None,
                        column=_TEXT_ATTRS[qual], value_test=lambda x: rx.search(x) is not None)
        v = value.lower()
        if qual == "rpo":
            return _rpo_term(raw, negate, v)
        if qual == "policy":
            return _policy_term(raw, negate, v)
        if qual == "rule":
            # exact id, or a prefix such as "disk-" or "state-"
            return Term(raw, negate, lambda r, _m: any(x == v or x.startswith(v) for x in r.rules))
        if qual == "site":
            # exactly: labels are short ("a", "b") and one must not select another by prefix
            return Term(raw, negate, lambda r, _m: r.site.lower() == v,
                        column="site", value_test=lambda x: x.lower() == v)
        if qual in ("verdict", "state"):
            get = _text_attr(qual)
            return Term(raw, negate, lambda r, _m: get(r).lower().startswith(v),
                        column=_TEXT_ATTRS[qual], value_test=lambda x: x.lower().startswith(v))
        get = _text_attr(qual)
        return Term(raw, negate, lambda r, _m: v in get(r).lower(),
                    column=_TEXT_ATTRS[qual], value_test=lambda x: v in x.lower())
    if sep and qual and qual.isalpha() and not value:
        raise FilterError(f"unknown column {qual!r}; use one of: {', '.join(QUALIFIERS)}")
    v = token.lower()
    return Term(raw, negate, lambda r, _m: v in r.search, plain=v)


def _rpo_term(raw: str, negate: bool, v: str) -> Term:
    """``rpo:STATE``: the states whose name (or alias: none, unknown) starts with ``v``."""
    v = v.replace(" ", "-")
    words = {**{s: s for s in PROTECTION_STATES}, **_RPO_ALIASES}
    states = frozenset(state for word, state in words.items() if word.startswith(v))
    if not states:
        raise FilterError(f"rpo: wants ok, at-risk, breached or none (got {v!r})")
    return Term(raw, negate, lambda r, _m: r.protection in states,
                column="protection", value_test=lambda x: x in states)


def _policy_term(raw: str, negate: bool, v: str) -> Term:
    """``policy:NAME``: the winning policy by exact name or prefix; ``policy:none``: not covered."""
    if v == "none":
        return Term(raw, negate, lambda r, _m: r.protection == "not-covered",
                    column="protection", value_test=lambda x: x == "not-covered")

    def test(name: str) -> bool:
        return bool(name) and name.lower().startswith(v)
    return Term(raw, negate, lambda r, _m: test(r.policy), column="policy", value_test=test)


def protection_terms(flt: Filter) -> list[str]:
    """The terms of ``flt`` that read a VM's protection (``rpo:``, ``policy:``), as typed."""
    out = []
    for t in flt.terms:
        qual = t.text.lstrip("!").partition(":")[0].lower()
        if qual in PROTECTION_QUALIFIERS and ":" in t.text:
            out.append(t.text)
    return out


def site_terms(flt: Filter) -> list[str]:
    """The terms of ``flt`` that read a VM's site (``site:``), as typed: only the console knows which
    VRM a row is from (a policy service reads one VRM, whose rows carry no site)."""
    return [t.text for t in flt.terms if t.text.lstrip("!").partition(":")[0].lower() == "site" and ":" in t.text]


def parse_filter(text: str) -> Filter:
    """Parse the ``/`` filter line; raises :class:`FilterError` with a readable reason."""
    text = text or ""
    try:
        lex = shlex.shlex(text, posix=True)
        lex.whitespace_split = True
        lex.escape = ""          # backslashes belong to regular expressions, not to the shell
        lex.commenters = ""
        tokens = list(lex)
    except ValueError as e:
        raise FilterError(f"unbalanced quotes in filter: {e}") from None
    return Filter(text, tuple(_parse_term(t) for t in tokens if t))


# --- the store and views ------------------------------------------------------------------------

# the summary bar's protection counts, worst first, as the filters that select them
PROTECTION_FILTERS = (("not-covered", "rpo:none"), ("breached", "rpo:breached"), ("at-risk", "rpo:at-risk"))


@dataclass(slots=True)
class Summary:
    total: int
    by_verdict: dict[str, int]
    by_rule: dict[str, int]     # by severity (blockers first), then most frequent first
    by_protection: dict[str, int] = field(default_factory=dict)   # PROTECTION_STATES (assessed rows only)
    by_site: dict[str, int] = field(default_factory=dict)         # VMs per VRM label (rows with a site)

    def items(self) -> list[tuple[str, int]]:
        """Entries of the summary bar in display order, as filter expressions and counts: the
        verdicts, the protection problems that have VMs (none when all are ok), then the rules. With
        VMs of several VRMs the sites' counts come first."""
        out = [(f"site:{s}", n) for s, n in self.by_site.items()] if len(self.by_site) > 1 else []
        out += [(f"verdict:{v}", self.by_verdict.get(v, 0)) for v in VERDICTS]
        out += [(expr, self.by_protection[state]) for state, expr in PROTECTION_FILTERS
                if self.by_protection.get(state)]
        out += [(f"rule:{r}", n) for r, n in self.by_rule.items()]
        return out


def summarize(rows: Iterable[VmRow]) -> Summary:
    by_verdict: dict[str, int] = {v: 0 for v in VERDICTS}
    by_rule: dict[str, int] = {}
    by_protection: dict[str, int] = {}
    by_site: dict[str, int] = {}
    total = 0
    for r in rows:
        total += 1
        if r.site:
            by_site[r.site] = by_site.get(r.site, 0) + 1
        if r.verdict:
            by_verdict[r.verdict] = by_verdict.get(r.verdict, 0) + 1
        if r.protection:
            by_protection[r.protection] = by_protection.get(r.protection, 0) + 1
        for rule in r.rules:
            by_rule[rule] = by_rule.get(rule, 0) + 1
    # blockers first, then warnings, then infos, each most frequent first: the bar's first rule counts
    # say what stops backups, not the info finding most VMs carry (consistency-not-euleros)
    from ..rules.catalog import RULES
    severity = {r: SEVERITY_ORDER.get(RULES[r].severity, 9) if r in RULES else 9 for r in by_rule}
    ordered = dict(sorted(by_rule.items(), key=lambda kv: (severity[kv[0]], -kv[1], kv[0])))
    return Summary(total, by_verdict, ordered, by_protection, dict(sorted(by_site.items())))


@dataclass(frozen=True, slots=True)
class View:
    """What the table shows: ordered keys after filter and sort (computed off the UI thread)."""
    keys: tuple[str, ...]
    filter: Filter
    sort: str
    reverse: bool
    generation: int       # store generation it was computed from


class RowStore:
    """All rows by key, in arrival order, plus marks. Mutated only by the UI thread's handlers.

    ``upsert`` replaces rows in place (keyed), so a refresh keeps the cursor, scroll and marks;
    ``retain`` drops VMs that disappeared at the end of a full refresh.
    """

    def __init__(self) -> None:
        self.rows: dict[str, VmRow] = {}
        self.marks: set[str] = set()
        self.generation = 0

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> VmRow | None:
        return self.rows.get(key)

    def upsert(self, rows: Iterable[VmRow]) -> tuple[int, int]:
        """Insert or replace; returns (added, changed)."""
        added = changed = 0
        for row in rows:
            old = self.rows.get(row.key)
            if old is None:
                added += 1
            elif not old.same_display(row):
                changed += 1
            self.rows[row.key] = row
        if added or changed:
            self.generation += 1
        return added, changed

    def confirm(self, keys: Iterable[str]) -> int:
        """Make these rows' provisional verdicts final; how many changed. In place (10,000 new rows
        cost the UI thread ~25 ms; a flag, ~1 ms): whoever drew them must redraw (VmTable.redraw_rows).
        Display only: filter, sort and summary never look at ``provisional``, so views computed
        before stay valid -- no new generation, no new view."""
        rows = self.rows
        n = 0
        for k in keys:
            r = rows.get(k)
            if r is not None and r.provisional:
                r.provisional = False
                n += 1
        return n

    def retain(self, keys: Iterable[str]) -> int:
        keep = set(keys)
        gone = [k for k in self.rows if k not in keep]
        for k in gone:
            del self.rows[k]
        self.marks &= keep
        if gone:
            self.generation += 1
        return len(gone)

    def snapshot(self) -> tuple[list[VmRow], frozenset[str], int]:
        """An immutable copy for a worker thread (the dict may change while it filters)."""
        return list(self.rows.values()), frozenset(self.marks), self.generation

    def toggle_mark(self, key: str) -> bool:
        if key in self.marks:
            self.marks.discard(key)
            return False
        self.marks.add(key)
        return True


def compute_view(rows: Sequence[VmRow], marks: frozenset[str], flt: Filter | str, sort: str = "name",
                 reverse: bool = False, generation: int = 0) -> View:
    """Filter then sort; pure, thread-safe on its inputs."""
    if isinstance(flt, str):
        flt = parse_filter(flt)
    picked = [r for r in rows if flt.matches(r, marks)] if flt else list(rows)
    ordered = sort_rows(picked, sort, reverse)
    return View(tuple(r.key for r in ordered), flt, sort, reverse, generation)


def rows_by_key(rows: Iterable[VmRow]) -> Mapping[str, VmRow]:
    return {r.key: r for r in rows}


class ViewCache:
    """Remembers the sorted order and the summary per store generation, so a filter keystroke costs
    no sort and no count. Plain-text and column terms are answered without a Python call per row (one
    list comprehension over the haystacks; one test per distinct column value), and each answer is
    kept for the generation: in a worker thread the per-row calls still held the GIL the UI thread
    needs for the keys.

    Used from one worker at a time (the app never runs two view computations at once)."""

    def __init__(self) -> None:
        self._sorted_key: tuple[int, str, bool] | None = None
        self._sorted: list[VmRow] = []
        self._summary_gen: int | None = None
        self._summary: Summary | None = None
        self._searches: list[str] | None = None   # the sorted rows' ``search`` haystacks
        self._plain: dict[str, list[int]] = {}
        self._groups: dict[str, dict[str, list[int]]] = {}

    def _plain_indices(self, v: str) -> list[int]:
        """Ascending indices (in sorted order) of the rows whose haystack contains ``v``: one list
        comprehension with no call per row (about 1 ms for 10,000 rows)."""
        hit = self._plain.get(v)
        if hit is not None:
            return hit
        if self._searches is None:
            self._searches = [r.search for r in self._sorted]
        searches = self._searches
        # typing narrows: rows containing "erp-" are among those containing "erp"
        narrower = self._plain.get(v[:-1]) if len(v) > 1 else None
        if narrower is not None:
            out = [i for i in narrower if v in searches[i]]
        else:
            out = [i for i, text in enumerate(searches) if v in text]
        if len(self._plain) > 64:
            self._plain.clear()
        self._plain[v] = out
        return out

    def _column_indices(self, column: str, test: Callable[[str], bool]) -> list[int]:
        """Indices of the rows whose ``column`` passes ``test``: one test per distinct value."""
        groups = self._groups.get(column)
        if groups is None:
            groups = {}
            for i, r in enumerate(self._sorted):
                v = getattr(r, column)
                g = groups.get(v)
                if g is None:
                    groups[v] = [i]
                else:
                    g.append(i)
            self._groups[column] = groups
        out: list[int] = []
        hits = 0
        for value, idx in groups.items():
            if test(value):
                out.extend(idx)
                hits += 1
        if hits > 1:
            out.sort()        # several values: back to the sorted order
        return out

    def _filter(self, flt: Filter, marks: frozenset[str]) -> tuple[str, ...]:
        rows = self._sorted
        n = len(rows)
        lists: list[list[int]] = []
        sets: list[set[int]] = []
        rest: list[Term] = []
        for t in flt.terms:
            if t.plain is not None:
                idx = self._plain_indices(t.plain)
            elif t.column is not None and t.value_test is not None:
                idx = self._column_indices(t.column, t.value_test)
            else:
                rest.append(t)
                continue
            if t.negate:
                sets.append(set(range(n)).difference(idx))
            else:
                lists.append(idx)
        if not lists and not sets:
            cand = rows
        elif len(lists) == 1 and not sets:
            cand = [rows[i] for i in lists[0]]          # already ascending: no set, no sort
        else:
            picked = sets[0] if sets else set(lists[0])
            for other in sets[1:] + lists:
                picked = picked.intersection(other)
            cand = [rows[i] for i in sorted(picked)]
        if not rest:
            return tuple([r.key for r in cand])
        return tuple([r.key for r in cand if all(t(r, marks) for t in rest)])

    def is_cheap(self, flt: Filter, sort: str, reverse: bool, generation: int) -> bool:
        """True when :meth:`compute` needs no sort and no count and every term is answered a set at a
        time: a few ms at 10,000 rows, cheaper than handing the work to a thread and back."""
        return (self._sorted_key == (generation, sort, reverse) and self._summary_gen == generation
                and all(t.plain is not None or t.value_test is not None for t in flt.terms))

    def compute(self, rows: Sequence[VmRow], marks: frozenset[str], flt: Filter | str, sort: str,
                reverse: bool, generation: int) -> tuple[View, Summary]:
        if isinstance(flt, str):
            flt = parse_filter(flt)
        key = (generation, sort, reverse)
        if self._sorted_key != key:
            self._sorted = sort_rows(rows, sort, reverse)
            self._sorted_key = key
            self._searches = None
            self._plain.clear()
            self._groups.clear()
        if flt:
            keys = self._filter(flt, marks)
        else:
            keys = tuple([r.key for r in self._sorted])
        if self._summary_gen != generation or self._summary is None:
            self._summary = summarize(rows)
            self._summary_gen = generation
        return View(keys, flt, sort, reverse, generation), self._summary
