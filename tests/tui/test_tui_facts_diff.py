"""The refresh process sends a VM's facts (snapshot tree, backup knowledge) only when they changed
since the last refresh; the console merges them and forgets VMs that are gone."""

from __future__ import annotations

from fctui.tui.feedproc import FactsLite, dumps, slim_event
from fctui.tui.source import Complete
import pickle


def complete(facts: dict) -> Complete:
    return Complete(set(facts), {}, facts, 1.0)


def test_unchanged_facts_are_not_sent_again_and_cleared_ones_are() -> None:
    sent: dict[str, int] = {}
    first = slim_event(complete({"a": FactsLite({"snap": 1}, None), "b": FactsLite(None, {"chg": "x"}),
                                 "c": FactsLite(None, None)}), sent)
    assert set(first.facts) == {"a", "b"}
    # same content in new objects: nothing to send
    again = slim_event(complete({"a": FactsLite({"snap": 1}, None), "b": FactsLite(None, {"chg": "x"}),
                                 "c": FactsLite(None, None)}), sent)
    assert again.facts == {}
    # a changes, b loses its facts (sent as an empty FactsLite so the console drops them)
    third = slim_event(complete({"a": FactsLite({"snap": 2}, None), "b": FactsLite(None, None),
                                 "c": FactsLite(None, None)}), sent)
    assert third.facts["a"].snapshot_tree == {"snap": 2}
    assert third.facts["b"] == FactsLite()
    # a VM that disappears is forgotten: when it comes back its facts are sent again
    slim_event(Complete({"c"}, {}, {"c": FactsLite(None, None)}, 1.0), sent)
    back = slim_event(complete({"a": FactsLite({"snap": 2}, None)}), sent)
    assert set(back.facts) == {"a"}
    assert pickle.loads(dumps(("event", back)))[1].facts["a"].snapshot_tree == {"snap": 2}


def test_without_memory_every_fact_is_sent() -> None:
    ev = slim_event(complete({"a": FactsLite({"snap": 1}, None)}))
    assert set(ev.facts) == {"a"}
