"""Topic filters and the subscription trie (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7-4.8)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.broker.records import SubscriptionRecord
from gateway.broker.shared_empty import NO_ITEMS
from gateway.broker.topic_tree import (
    NO_MATCH,
    SubscriptionTree,
    filter_matches,
    split_shared,
)
from gateway.mqtt.codec import is_valid_topic_filter as valid_filter
from gateway.mqtt.codec import is_valid_topic_name as valid_topic_name


def rec(client_id: str, f: str, qos: int = 0, **kw: object) -> SubscriptionRecord:
    return SubscriptionRecord(client_id, f, qos, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("f", "ok"),
    [
        ("a", True),
        ("a/b/c", True),
        ("+", True),
        ("#", True),
        ("a/+/c", True),
        ("a/#", True),
        ("+/+", True),
        ("/", True),
        ("a//b", True),
        ("", False),
        ("a/#/c", False),
        ("a#", False),
        ("a+", False),
        ("a/b+", False),
        ("#/", False),
        ("a\0b", False),
    ],
)
def test_valid_filter(f: str, ok: bool) -> None:
    assert valid_filter(f) is ok


def test_valid_topic_name() -> None:
    assert valid_topic_name("a/b")
    assert valid_topic_name("/")
    assert not valid_topic_name("")
    assert not valid_topic_name("a/+")
    assert not valid_topic_name("a/#")


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        ("a/b", (None, "a/b")),
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/g", None),
        ("$share//a", None),
        ("$share/g/", None),
        ("$share/g+/a", None),
        ("$share/g#/a", None),
    ],
)
def test_split_shared(f: str, expected: tuple[str | None, str] | None) -> None:
    assert split_shared(f) == expected


@pytest.mark.parametrize(
    ("f", "topic", "match"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/#", "sport", True),
        ("#", "a/b", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("#", "$SYS/x", False),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/#", "$SYS/monitor/Clients", True),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b", "a/b/c", False),
    ],
)
def test_matching(f: str, topic: str, match: bool) -> None:
    assert filter_matches(f.split("/"), topic) is match
    tree = SubscriptionTree()
    tree.add(rec("c", f))
    assert (tree.match(topic) is not NO_MATCH) is match


def test_overlapping_subscriptions_are_folded_per_client() -> None:
    tree = SubscriptionTree()
    tree.add(rec("a", "x/#", 1, subscription_id=1))
    tree.add(rec("a", "x/+", 2, subscription_id=2))
    tree.add(rec("a", "x/y", 0, no_local=True, retain_as_published=True))
    tree.add(rec("b", "#", 0))
    m = tree.match("x/y")
    by = {t.client_id: t for t in m.targets}
    assert set(by) == {"a", "b"}
    a = by["a"]
    assert (a.qos, a.rap, sorted(a.sub_ids)) == (2, True, [1, 2])
    assert (a.local_qos, a.local_rap, sorted(a.local_sub_ids)) == (2, False, [1, 2])
    tree.add(rec("c", "x/y", 1, no_local=True))
    c = {t.client_id: t for t in tree.match("x/y").targets}["c"]
    assert c.local_qos == -1


def test_add_replaces_and_reports_new() -> None:
    tree = SubscriptionTree()
    assert tree.add(rec("a", "t", 0))
    assert not tree.add(rec("a", "t", 2))
    assert len(tree) == 1
    assert tree.match("t").targets[0].qos == 2


def test_cache_invalidated_on_change_and_nodes_pruned() -> None:
    tree = SubscriptionTree()
    assert tree.match("a/b") is NO_MATCH
    tree.add(rec("c", "a/+"))
    assert tree.match("a/b") is not NO_MATCH
    assert tree.match("a/b") is tree.match("a/b")  # cached
    assert tree.remove("c", "a/+")
    assert tree.match("a/b") is NO_MATCH
    assert not tree.remove("c", "a/+")
    assert tree._root.children == {}
    assert len(tree) == 0


def test_shared_groups() -> None:
    tree = SubscriptionTree()
    tree.add(rec("a", "$share/g/jobs/#", 1))
    tree.add(rec("b", "$share/g/jobs/#", 1))
    tree.add(rec("c", "$share/h/jobs/+", 1))
    m = tree.match("jobs/1")
    assert m.targets == ()
    groups = {g.name: g for g in m.groups}
    assert set(groups) == {"g", "h"}
    assert groups["g"].order == ("a", "b")
    assert len(tree) == 3
    tree.remove("a", "$share/g/jobs/#")
    assert {g.name: g.order for g in tree.match("jobs/1").groups}["g"] == ("b",)
    tree.remove("b", "$share/g/jobs/#")
    assert [g.name for g in tree.match("jobs/1").groups] == ["h"]
    assert tree.match("$x/1") is NO_MATCH


LEVEL = st.sampled_from(["a", "b", "c", "", "$x"])
TOPIC = st.lists(LEVEL, min_size=1, max_size=4).map("/".join).filter(valid_topic_name)
FILTER = (
    st.lists(st.sampled_from(["a", "b", "", "+", "$x"]), min_size=1, max_size=4)
    .flatmap(lambda ls: st.sampled_from([ls, [*ls, "#"], ["#"]]))
    .map("/".join)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(FILTER, min_size=1, max_size=8), st.lists(TOPIC, min_size=1, max_size=8))
def test_tree_agrees_with_brute_force(filters: list[str], topics: list[str]) -> None:
    tree = SubscriptionTree()
    for i, f in enumerate(filters):
        tree.add(rec(f"c{i}", f))
    for topic in topics:
        expected = {f"c{i}" for i, f in enumerate(filters) if filter_matches(f.split("/"), topic)}
        assert {t.client_id for t in tree.match(topic).targets} == expected, topic
    for i, f in enumerate(filters):
        tree.remove(f"c{i}", f)
    assert len(tree) == 0 and tree._root.children == {}
    assert NO_ITEMS == {}  # the empty dict the nodes share was never written


def test_nodes_share_one_empty_dict_and_never_write_it() -> None:
    tree = SubscriptionTree()
    tree.add(rec("a", "home/+/set"))
    tree.add(rec("b", "$share/g/home/+/set"))
    tree.add(rec("c", "home/#"))
    leaf = tree._root.children["home"].children["+"].children["set"]
    assert leaf.children is NO_ITEMS  # a leaf holds no children dict of its own
    assert set(leaf.subs) == {"a"} and set(leaf.shared) == {"g"}
    assert tree._root.subs is NO_ITEMS and tree._root.shared is NO_ITEMS
    assert {t.client_id for t in tree.match("home/x/set").targets} == {"a", "c"}
    assert not tree.remove("z", "home/+/set") and not tree.remove("z", "$share/q/home/#")
    for cid, f in (("a", "home/+/set"), ("b", "$share/g/home/+/set"), ("c", "home/#")):
        assert tree.remove(cid, f)
    assert NO_ITEMS == {}
    assert tree.match("home/x/set") is NO_MATCH
