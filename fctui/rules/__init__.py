"""Backup-readiness rules: pure functions from a VM's facts to a verdict (no I/O, no textual).

``assess(VmFacts) -> Assessment`` evaluates every rule of ``shared/rules.md``'s main table; the
launch/restore/connect rules are functions in :mod:`fctui.rules.launch`. Interpretations made here
(where the catalog leaves room), kept as data in :mod:`fctui.rules.catalog` where possible:

* Extension rule ids: ``no-disks`` (blocker: no vmConfig or no disk, nothing to back up),
  ``data-incomplete`` (warning: fields a rule needs were missing, listed by name),
  ``snapshots-unknown`` (info: the snapshot tree was not read yet; the assessment is provisional).
* ``leftover-backup-snapshot`` fires only for backup snapshots no restore point or running job owns
  on a VM the product has backed up (it has a ``BackupKnowledge``), or whose name carries our prefix
  ``fctui-``: another product's backup snapshots are counted toward the limit but never offered for
  clean-up.
* ``cbt-chain-broken`` causes: a chain-breaking task (power-off, HA restart, snapshot revert, volume
  expansion, host reboot; classified by keywords of the task type) that succeeded since the last
  backup; the VM stopped now while it ran at the last backup; a disk grown since; a disk not fully
  backed up last time or not in the last backup; and, when a newer CBT snapshot's detail is known,
  a changed ``volCBTCreateTime`` or a lower ``chgID``. Without ``BackupKnowledge`` it never fires.
* ``target-space-low``: each snapshot-able disk is expected to need max(10 % of its size, 5 GB) to
  merge; the datastore must hold this VM's merges plus the expected load of the other backups that
  may merge there at once (up to 8 per target; estimated by the gatherer).
* ``shared-disk-x86``: a VM without an ``arch`` takes its host's; with neither, x86 is assumed and said.
* ``storage-unsupported``: a storage type outside the table is unsupported (named "unknown"); a disk
  without ``storageType`` takes its datastore's, else it is reported by ``data-incomplete``.
* ``vrm-version-untested``: see ``catalog.TESTED_API_VERSIONS`` (the negotiated API version follows
  the FusionCompute release line; 6.3.x is the tested release, 8.7.x the tested interface).
"""

from .catalog import KINDS, MAIN_RULE_IDS, LAUNCH_RULE_IDS, EXTENSION_RULE_IDS, RULES, RuleInfo, STORAGE_TYPES
from .engine import Assessment, Finding, assess, assess_many
from .facts import BackupKnowledge, VmFacts, VolumeCbtState

__all__ = [
    "KINDS", "MAIN_RULE_IDS", "LAUNCH_RULE_IDS", "EXTENSION_RULE_IDS", "RULES", "RuleInfo", "STORAGE_TYPES",
    "Assessment", "Finding", "assess", "assess_many", "BackupKnowledge", "VmFacts", "VolumeCbtState",
]
