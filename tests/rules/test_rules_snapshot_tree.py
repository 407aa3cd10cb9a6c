"""A snapshot tree read after the rules ran (a job took or deleted a snapshot since) decides the VM's
snapshot findings (issue 15, bug 4): ``with_snapshot_tree`` derives them again, leaving the rest."""

from __future__ import annotations

from fctui.rules.engine import assess, with_snapshot_tree

from .test_rules_engine import facts, tree

LEFTOVER = "leftover-backup-snapshot"


def test_a_deleted_leftover_is_gone_and_a_new_one_appears() -> None:
    old = facts(snapshots=tree(("fctui-j1-1", "CBTbackup")))
    a = assess(old)
    assert LEFTOVER in [f.rule for f in a.findings] and a.verdict != "ready"

    empty = facts(snapshots=tree()).snapshot_tree
    after = with_snapshot_tree(a, empty, None)
    assert LEFTOVER not in [f.rule for f in after.findings]
    assert after.verdict == assess(facts(snapshots=tree())).verdict

    # the same tree: the same assessment, unchanged
    assert with_snapshot_tree(a, old.snapshot_tree, None) is a
    # a running job's snapshot: owned, not a leftover
    urn = next(iter(old.snapshot_tree.walk())).urn
    assert LEFTOVER not in [f.rule for f in with_snapshot_tree(a, old.snapshot_tree, None, {urn}).findings]
    # and back: a tree with a leftover the rules never saw
    clean = assess(facts(snapshots=tree()))
    assert LEFTOVER in [f.rule for f in with_snapshot_tree(clean, old.snapshot_tree, None).findings]
