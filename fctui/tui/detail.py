"""The detail of one VM as Rich text: disks, snapshots, findings with remediation, CBT chain state."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any, Mapping

from rich.console import Group, RenderableType
from rich.text import Text

from ..inventory.query import SEVERITY_ORDER
from ..units import human_bytes

SEVERITY_STYLE = {"blocker": "bold red", "warning": "yellow", "info": "cyan"}
VERDICT_STYLE = {"blocked": "bold red", "degraded": "bold yellow", "ready": "bold green"}
PROTECTION_HEAD = {"ok": ("OK", "bold green"), "at-risk": ("AT RISK", "bold yellow"),
                   "breached": ("BREACHED", "bold red"), "not-covered": ("NOT COVERED", "red")}


def storage_info(storage_type: str) -> tuple[str, bool | None]:
    """(storage class, supported) from the rules catalogue; unknown types say so."""
    try:
        from ..rules.catalog import STORAGE_TYPES
    except Exception:
        return "unknown", None
    st = STORAGE_TYPES.get(storage_type)
    if st is None:
        return "unknown", None
    return st.storage_class, st.supported


def _gb(v: int | None) -> str:
    """A size the VRM gives in (binary) GB, in the units of every other size (fctui.units)."""
    return human_bytes(None if v is None else v * (1 << 30))


def next_backup_text(vm: Any, assessment: Any, facts: Any, plan: Any = None) -> tuple[str, str]:
    """(CBT chain state, what the next backup will be and why). ``plan``: the VM planned as ``b`` plans
    it (fctui.jobs.planner, from the repository's latest restore point): when given, it decides."""
    findings = list(getattr(assessment, "findings", None) or ())
    by_rule = {getattr(f, "rule", ""): f for f in findings}
    kinds = getattr(assessment, "kinds", None) or {}
    if assessment is not None and getattr(assessment, "verdict", "") == "blocked":
        main = getattr(assessment, "main_reason", None) or (findings[0] if findings else None)
        why = getattr(main, "message", "") or getattr(main, "rule", "") or "a blocking finding"
        return "not applicable", f"No backup can run now: {why}"
    if "cbt-chain-broken" in by_rule:
        return "broken", f"Next backup will be full because {by_rule['cbt-chain-broken'].message}"
    if kinds and not kinds.get("cbt", True):
        if "state-stopped" in by_rule:
            return "not usable", ("Next backup will be full because the VM is stopped: only standard "
                                  "snapshots are possible, so every run reads all written blocks")
        return "not usable", "Next backup will be full because CBT snapshots are ruled out for this VM"
    if plan is not None:
        from ..jobs.planner import next_backup_mode
        mode, why = next_backup_mode(plan)
        if mode == "incremental":
            return "intact", f"Next backup can be incremental: {why}"
        if mode == "full" and getattr(plan, "base_point_id", None) is not None:
            return ("broken" if "CBT chain broken" in why else "full next"), f"Next backup will be full because {why}"
    knowledge = getattr(facts, "knowledge", None) if facts is not None else None
    if knowledge is None or getattr(knowledge, "last_backup_time", None) is None:
        return "no chain yet", ("Next backup will be full because no earlier backup of this VM is known; "
                                "later ones can be incremental through CBT")
    return "intact", "Next backup can be incremental (CBT chain intact)"


def _when(ts: float, now: float, tz: tzinfo | None) -> str:
    """An instant in local time and how far from ``now``: "2026-12-03 01:00 (11 h ago)"."""
    from ..jobs.protection import short_duration
    at = datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")
    span = short_duration(abs(now - ts))
    return f"{at} ({span} ago)" if ts <= now else f"{at} (in {span})"


def protection_text(protection: Any, *, error: str = "", now: float, tz: tzinfo | None) -> Text:
    """The VM's protection (issue 16): state and why, the policy that protects it (and the others that
    select it), the newest good restore point and its age, the next run."""
    out = Text()
    if protection is None:
        if error:
            out.append("unknown: ", style="yellow")
            out.append(error)
        else:
            out.append("not assessed yet", style="dim")
        return out
    word, style = PROTECTION_HEAD.get(protection.state, (protection.state.upper(), "bold"))
    out.append(word, style=style)
    out.append(f"  {protection.reason}")
    if protection.policy:
        out.append("\npolicy ")
        out.append(protection.policy, style="bold")
        if protection.rpo_s:
            from ..jobs.protection import short_duration
            out.append(f" · RPO {short_duration(protection.rpo_s)}")
        if protection.also:
            out.append(f" · also selected by {', '.join(protection.also)}", style="dim")
    out.append("\nnewest good point ")
    if protection.last_good is None:
        out.append("none yet", style="dim")
    else:
        out.append(_when(protection.last_good, now, tz))
    if protection.policy:
        out.append("\nnext run ")
        if protection.next_run is None:
            out.append("none scheduled", style="yellow")
        else:
            out.append(_when(protection.next_run, now, tz))
    return out


def render_detail(vm: Any, assessment: Any = None, facts: Any = None, snapshots: Any = None,
                  datastores: Mapping[str, Any] | None = None, *, snapshots_error: str = "",
                  width: int = 60, plan: Any = None, protection: Any = None, protection_error: str = "",
                  now: float | None = None, tz: tzinfo | None = None) -> RenderableType:
    """Everything a person needs about one VM to decide what to do. ``protection``: its
    ``jobs.protection.VmProtection`` (None: not assessed, or unknown with ``protection_error``)."""
    parts: list[RenderableType] = []
    head = Text()
    head.append(vm.name or vm.urn, style="bold")
    verdict = getattr(assessment, "verdict", "") if assessment is not None else ""
    if verdict:
        head.append("  ")
        head.append(verdict.upper(), style=VERDICT_STYLE.get(verdict, "bold"))
    parts.append(head)
    info = Text()
    info.append(f"{vm.urn}\n", style="dim")
    tools = "absent" if vm.tools_version is None else (vm.tools_version or "not installed")
    info.append(f"state {vm.status or '?'} · host {vm.host_name or '?'} · cluster {vm.cluster_name or '?'}\n")
    info.append(f"Tools {tools} (PV driver {vm.pv_driver_status or '?'}) · arch {vm.arch or '?'}")
    if vm.is_template:
        info.append(" · template")
    if vm.is_link_clone:
        info.append(" · linked clone")
    parts.append(info)

    if now is not None:
        parts.append(Text("\nProtection", style="bold underline"))
        parts.append(protection_text(protection, error=protection_error, now=now, tz=tz))

    # disks
    parts.append(Text("\nDisks", style="bold underline"))
    if not vm.disks:
        parts.append(Text("no disks listed" + (" (vmConfig missing)" if not vm.has_vm_config else ""), style="dim"))
    for d in vm.disks:
        cls, supported = storage_info(d.storage_type)
        flags = []
        if d.indep_disk:
            flags.append("independent")
        if d.is_shared:
            flags.append("shared")
        if supported is False:
            flags.append("unsupported storage")
        if d.pci_type == "IDE":
            flags.append("IDE bus")
        line = Text()
        line.append(f"{d.label}", style="bold")
        line.append(f"  {d.pci_type or '?'} · {_gb(d.quantity_gb)} · {d.storage_type or '?'} ({cls})")
        if flags:
            line.append(f" · {', '.join(flags)}", style="yellow")
        parts.append(line)

    # findings
    findings = sorted(getattr(assessment, "findings", None) or (),
                      key=lambda f: SEVERITY_ORDER.get(getattr(f, "severity", ""), 9))
    parts.append(Text("\nFindings", style="bold underline"))
    if assessment is None:
        parts.append(Text("not assessed yet", style="dim"))
    elif not findings:
        parts.append(Text("none: a CBT backup can run now", style="green"))
    for f in findings:
        line = Text()
        sev = getattr(f, "severity", "")
        line.append(f"{sev:<8}", style=SEVERITY_STYLE.get(sev, ""))
        line.append(f"{getattr(f, 'rule', '')}", style="bold")
        line.append(f"  {getattr(f, 'message', '')}")
        disks = list(getattr(f, "disks", None) or ())
        if disks:
            names = {d.volume_urn: d.label for d in vm.disks}
            line.append(f"\n        disks: {', '.join(names.get(x, x) for x in disks)}", style="dim")
        rem = getattr(f, "remediation", "")
        if rem:
            line.append(f"\n        → {rem}", style="italic")
        parts.append(line)
    kinds = getattr(assessment, "kinds", None)
    if kinds:
        ok = [k for k, v in kinds.items() if v]
        no = [k for k, v in kinds.items() if not v]
        k = Text("snapshot kinds possible: ", style="dim")
        k.append(", ".join(ok) or "none", style="green" if ok else "red")
        if no:
            k.append(" · ruled out: ", style="dim")
            k.append(", ".join(no), style="red")
        parts.append(k)

    # CBT and next backup
    chain, nxt = next_backup_text(vm, assessment, facts, plan)
    parts.append(Text("\nCBT chain", style="bold underline"))
    parts.append(Text(f"{chain}: {nxt}"))

    # snapshots
    parts.append(Text("\nSnapshots", style="bold underline"))
    if snapshots_error:
        parts.append(Text(f"could not read: {snapshots_error}", style="yellow"))
    elif snapshots is None:
        parts.append(Text("loading…", style="dim"))
    else:
        nodes = list(snapshots.walk())
        if not nodes:
            parts.append(Text("none", style="dim"))
        backup = sum(1 for n in nodes if n.type in ("backup", "CBTbackup"))
        if nodes:
            parts.append(Text(f"{len(nodes)} snapshots, {backup} backup snapshots (limit 32)", style="dim"))
        for n in nodes[:12]:
            parts.append(Text(f"  {n.name or n.urn}  {n.type} {n.status} {n.create_time}".rstrip()))
        if len(nodes) > 12:
            parts.append(Text(f"  … {len(nodes) - 12} more", style="dim"))
    return Group(*parts)
