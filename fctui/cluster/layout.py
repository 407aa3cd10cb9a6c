"""Names of the cluster's NATS resources and keys, and its timing settings (see fctui.cluster)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

WORK_STREAM = "FCTUI_WORK"
WORK_SUBJECT_JOB = "fctui.work.job"       # payload: {"job": job id}
WORK_SUBJECT_VM = "fctui.work.vm"         # payload: {"job": job id, "vm": VM URN, "vm_key": vm key}
WORK_CONSUMER = "proxies"                 # one durable pull consumer shared by every agent

JOBS_BUCKET = "FCTUI_JOBS"
SLOTS_BUCKET = "FCTUI_SLOTS"
AGENTS_BUCKET = "FCTUI_AGENTS"

SLOTS_PER_HOST = 8        # product document §3: 8 backup socket connections per host
SLOTS_PER_DATASTORE = 8   # product document §2: 8 volumes at a time on a target storage

_SAFE = re.compile(r"[^A-Za-z0-9_=-]")


def key_part(value: str) -> str:
    """One token of a KV key (no dots, only the characters NATS keys allow) from a URN or an id:
    readable where it can be, and unique (a short hash of the original) when characters were replaced."""
    cleaned = _SAFE.sub("_", value)
    if cleaned == value and value:
        return value
    return f"{cleaned[-40:]}-{hashlib.sha1(value.encode()).hexdigest()[:10]}"


def job_key(job_id: str) -> str:
    return f"job.{key_part(job_id)}"


def vm_key(vm_urn: str) -> str:
    """The vm key of a VM URN (its record is ``vm.<job id>.<vm key>``)."""
    return key_part(vm_urn)


def vm_record_key(job_id: str, vm_urn: str) -> str:
    return f"vm.{key_part(job_id)}.{vm_key(vm_urn)}"


def chain_key(volume_urn: str) -> str:
    return f"chain.{key_part(volume_urn)}"


def host_slot_key(host_urn: str, n: int) -> str:
    return f"host.{key_part(host_urn or '?')}.{n}"


def datastore_slot_key(datastore_urn: str, n: int) -> str:
    return f"ds.{key_part(datastore_urn or '?')}.{n}"


def agent_key(agent_id: str) -> str:
    return f"agent.{key_part(agent_id)}"


@dataclass(frozen=True)
class ClusterSettings:
    """Timing of the cluster. Production defaults; tests shorten them (never sleeping on them: they wait
    for the state they expect, bounded by a multiple of these)."""
    ack_wait_s: float = 60.0          # a VM item not reported in progress this long goes to another proxy
    slot_ttl_s: float = 120.0         # a slot not renewed this long is free again (> ack_wait: see fctui.cluster)
    agent_ttl_s: float = 30.0         # an agent's heartbeat entry expires after this
    progress_interval_s: float = 1.0  # a running VM's record is written at most this often
    max_attempts: int = 4             # a VM item delivered this often (its proxies died) fails the VM

    def __post_init__(self) -> None:
        if self.slot_ttl_s <= self.ack_wait_s:
            raise ValueError("slot_ttl_s must exceed ack_wait_s: a dead proxy's slots must outlive its item "
                             "until another proxy adopts them")
