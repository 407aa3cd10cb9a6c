"""The readiness report of a gathered inventory: which VMs can be backed up, and if not, why and what to do.

``fctui check`` (fctui/cli/check.py) prints it as a table or JSON; the backup knowledge file (earlier backups
per VM, for cbt-chain-broken and leftovers) is read here too.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime, timezone
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Mapping, TextIO

from ..rules import catalog as C
from ..rules.engine import Assessment, with_owned_snapshots
from ..rules.facts import BackupKnowledge, VolumeCbtState
from ..rules.launch import vrm_version_untested
from .gather import Inventory

__all__ = ["report_document", "render_json", "own_snapshots", "render_table", "load_knowledge", "knowledge_from_json",
           "KnowledgeError", "vm_json_text"]

_VERDICT_ORDER = {C.VERDICT_BLOCKED: 0, C.VERDICT_DEGRADED: 1, C.VERDICT_READY: 2}


class KnowledgeError(ValueError):
    """The backup-knowledge file cannot be read (says which entry and why)."""


def load_knowledge(path: str) -> dict[str, BackupKnowledge]:
    """``{vm_urn: {"last_backup_time": epoch_s, "last_vm_status": "running",
    "owned_snapshots": [urn...], "volumes": {vol_urn: {"volCBTCreateTime", "chgID", "fully_backed_up",
    "size_gb"}}}}``."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as e:
        raise KnowledgeError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KnowledgeError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise KnowledgeError(f"{path}: expected an object keyed by VM URN")
    return knowledge_from_json(data, where=path)


def knowledge_from_json(data: Mapping[str, Any], where: str = "knowledge") -> dict[str, BackupKnowledge]:
    out: dict[str, BackupKnowledge] = {}
    for urn, k in data.items():
        if not isinstance(k, dict):
            raise KnowledgeError(f"{where}: entry {urn!r} must be an object")
        try:
            t = k.get("last_backup_time")
            vols: dict[str, VolumeCbtState] = {}
            for vu, v in (k.get("volumes") or {}).items():
                if not isinstance(v, dict):
                    raise KnowledgeError(f"{where}: {urn} volume {vu!r} must be an object")
                size = v.get("size_gb")
                vols[vu] = VolumeCbtState(vu, str(v.get("volCBTCreateTime", "")), str(v.get("chgID", "")),
                                          bool(v.get("fully_backed_up", True)),
                                          int(size) if size is not None else None)
            out[urn] = BackupKnowledge(
                last_backup_time=float(t) if t is not None else None, volumes=vols,
                owned_snapshot_urns=frozenset(str(s) for s in k.get("owned_snapshots") or ()),
                last_vm_status=str(k.get("last_vm_status", C.RUNNING)))
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, KnowledgeError):
                raise
            raise KnowledgeError(f"{where}: entry {urn!r}: {e}") from None
    return out


def _shown(inv: Inventory, only: str | None, rule: str | None) -> list[Assessment]:
    out = []
    for a in inv.assessments:
        if only and a.verdict != only:
            continue
        if rule and not a.has(rule):
            continue
        out.append(a)
    return out


def _summary(shown: list[Assessment]) -> dict[str, Any]:
    verdicts = Counter({v: 0 for v in C.VERDICTS})
    rules: Counter[str] = Counter()
    for a in shown:
        verdicts[a.verdict] += 1
        for r in {f.rule for f in a.findings}:
            rules[r] += 1
    ordered = sorted(rules.items(), key=lambda kv: (-kv[1], C.RULE_ORDER.get(kv[0], 999)))
    return {"verdicts": dict(verdicts), "rules": dict(ordered)}


def report_document(inv: Inventory, *, vrm_url: str = "", only: str | None = None,
                    rule: str | None = None) -> dict[str, Any]:
    """The ``fctui check --json`` document (shared/rules.md "JSON report" plus extra fields)."""
    shown = _shown(inv, only, rule)
    return _document(inv, shown, [a.to_json() for a in shown], vrm_url, only, rule)


def _document(inv: Inventory, shown: list[Assessment], vms: list[Any], vrm_url: str, only: str | None,
              rule: str | None) -> dict[str, Any]:
    untested = vrm_version_untested(inv.api_version)
    return {
        "generated_at": datetime.fromtimestamp(inv.fetched_at, timezone.utc).isoformat(timespec="seconds"),
        "vrm": {"url": vrm_url, "api_version": inv.api_version,
                "warning": untested.to_json() if untested else None},
        "site": {"urn": inv.site.urn, "name": inv.site.name},
        "filters": {"only": only, "rule": rule},
        "total_vms": len(inv.assessments),
        "summary": _summary(shown),
        "gaps": list(inv.gaps),
        "timings": {k: round(v, 4) for k, v in inv.timings.items()},
        "vms": vms,   # last: render_json splices pre-rendered VMs in here
    }


_COMPACT_ABOVE = 2000   # VMs; bigger reports are written without indentation


_TAILS: dict[tuple[Any, ...], str] = {}   # an assessment's JSON after its URN and name, by content


def _json_str(v: Any) -> str:
    return encode_basestring(v) if type(v) is str else json.dumps(v, ensure_ascii=False)


def vm_json_text(a: Assessment) -> str:
    """One VM of the compact report, exactly as ``json.dumps(a.to_json())`` would write it in
    :func:`render_json` (``gather(render_vm=...)`` renders them while the VRM is still being read).
    Most VMs of a site share their verdict and findings (10,000 VMs: ~100 distinct ones): the text
    after the URN and name is encoded once per distinct content, not once per VM."""
    key = (a.verdict, a.kinds_mask, a.provisional,
           tuple((f.rule, f.severity, f.message, f.remediation, tuple(f.disks)) for f in a.findings))
    tail = _TAILS.get(key)
    if tail is None:
        d = a.to_json()
        text = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
        if list(d)[:2] != ["urn", "name"] or d["urn"] != a.urn or d["name"] != a.name:
            return text   # a layout this shortcut does not know: no sharing
        del d["urn"], d["name"]
        if len(_TAILS) >= 50_000:
            _TAILS.clear()
        _TAILS[key] = tail = json.dumps(d, ensure_ascii=False, separators=(",", ":"))[1:]
        return text
    return f'{{"urn":{_json_str(a.urn)},"name":{_json_str(a.name)},{tail}'


def own_snapshots(inv: Inventory, owned: Mapping[str, str]) -> int:
    """Count the snapshots in ``owned`` (snapshot URN -> VM URN: a running or queued job's, which the
    agent knows and the rules do not) as owned, as the console does (rules.engine.with_owned_snapshots):
    those VMs' ``leftover-backup-snapshot`` findings narrow or go, their verdicts are derived again (and
    their pre-rendered JSON with them). Returns how many VMs changed."""
    vms = set(owned.values())
    changed = 0
    for i, (f, a) in enumerate(zip(inv.facts, inv.assessments)):
        if f.vm.urn not in vms:
            continue
        b = with_owned_snapshots(a, f.snapshot_tree, f.knowledge, owned)
        if b is not a:
            inv.assessments[i] = b
            if inv.vm_json is not None and len(inv.vm_json) == len(inv.assessments):
                inv.vm_json[i] = vm_json_text(b)
            changed += 1
    return changed


def render_json(inv: Inventory, *, vrm_url: str = "", only: str | None = None, rule: str | None = None) -> str:
    """The JSON report as text: indented for small sites, compact for big ones (same content).
    A big site's VMs come from ``inv.vm_json`` when gathered with ``render_vm=vm_json_text``."""
    big = len(inv.assessments) > _COMPACT_ABOVE
    pre = inv.vm_json
    if not big or pre is None or len(pre) != len(inv.assessments):
        doc = report_document(inv, vrm_url=vrm_url, only=only, rule=rule)
        return json.dumps(doc, ensure_ascii=False, indent=None if big else 1,
                          separators=(",", ":") if big else None)
    if only or rule:
        picked = [(a, t) for a, t in zip(inv.assessments, pre) if (not only or a.verdict == only)
                  and (not rule or a.has(rule))]
        shown, texts = [a for a, _ in picked], [t for _, t in picked]
    else:
        shown, texts = inv.assessments, pre
    head = json.dumps(_document(inv, shown, [], vrm_url, only, rule), ensure_ascii=False, separators=(",", ":"))
    assert head.endswith("[]}")
    return "".join((head[:-2], ",".join(texts), "]}"))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(1, width - 1)] + "…"


def render_table(inv: Inventory, out: TextIO, *, only: str | None = None, rule: str | None = None,
                 width: int | None = None) -> None:
    """A readable table (VM, verdict, reasons), worst first, then a count per verdict and per rule."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    shown = sorted(_shown(inv, only, rule), key=lambda a: (_VERDICT_ORDER[a.verdict], a.name))
    name_w = min(36, max([4] + [len(a.name) for a in shown]))
    reason_w = max(20, width - name_w - 12)
    out.write(f"{'VM':<{name_w}}  {'VERDICT':<8}  REASONS\n")
    for a in shown:
        reasons = [f.rule for f in a.findings if f.severity != C.INFO]
        m = a.main_reason
        if m is not None and m.severity != C.INFO:
            text = f"{', '.join(reasons)}: {m.message}"
        else:
            text = "-"
        out.write(f"{_cut(a.name or a.urn, name_w):<{name_w}}  {a.verdict:<8}  {_cut(text, reason_w)}\n")
    s = _summary(shown)
    v = s["verdicts"]
    out.write(f"\n{len(shown)} of {len(inv.assessments)} VMs shown: {v['blocked']} blocked, "
              f"{v['degraded']} degraded, {v['ready']} ready\n")
    if s["rules"]:
        out.write("findings per rule:\n")
        for r, n in s["rules"].items():
            sev = C.RULES[r].severity if r in C.RULES else "?"
            out.write(f"  {r:<28} {sev:<8} {n}\n")
    for g in inv.gaps:
        out.write(f"note: {g}\n")
