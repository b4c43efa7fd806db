"""The upstream bridge's topic rules: filter overlap, the topic map, and the checks that keep
an upstream out of the gateway's own topics and a 3.1.1 connection out of loops."""

from __future__ import annotations

import ast
import itertools
import sys
from dataclasses import replace

import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt.topics import filter_intersection, filters_overlap, topic_matches
from gateway.upstream.rules import TopicMap, strip_prefix
from gateway.upstream.settings import TopicRule, UpstreamConfig
from gateway.upstream.validate import (
    UpstreamProblem,
    check_connection,
    check_connections,
    check_local_safety,
    check_v311_loops,
    mqtt_string_problem,
    only_private_local,
    pattern_problem,
    prefix_problem,
    remote_overlap,
    topic_name_problem,
)

OUT_ALL = TopicRule("#", "out", 1, "gw/", "site1/gw/")
IN_SET = TopicRule("+/set", "in", 1, "gw/", "site1/gw/")

# --------------------------------------------------------------------------- filters_overlap


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+/c", "a/b/+", True),  # a/b/c
        ("a/+", "a/b/c", False),
        ("#", "a/b/c", True),
        ("a/#", "a", True),  # '#' matches its parent level
        ("a/b/#", "a", False),
        ("a/#", "b/#", False),
        ("+/+", "+", False),  # two levels never equal one
        ("+/#", "+", True),
        ("a/", "a/+", True),  # the empty level
        ("#", "$SYS/x", False),  # a filter starting with a wildcard never matches '$' topics
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/+", True),
        ("$SYS/#", "#", False),
        ("a/+/#", "a/#", True),
        ("a/+/c/#", "+/b/+/d", True),  # a/b/c/d
        ("a/+/c/#", "+/b/x/d", False),
    ],
)
def test_filters_overlap_examples(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


LEVELS = ("a", "b", "", "$a")
FILTER_LEVELS = st.sampled_from(("a", "b", "", "$a", "+"))


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVELS, min_size=1, max_size=3))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


# Every topic of 1-4 levels over the filters' alphabet and one value they never name: a
# witness of an overlap of filters of at most 4 levels is among them.
TOPICS = [
    "/".join(levels)
    for size in range(1, 5)
    for levels in itertools.product((*LEVELS, "z"), repeat=size)
]


@settings(max_examples=400, deadline=None)
@given(filters(), filters())
def test_filter_intersection_matches_exactly_the_common_topics(a: str, b: str) -> None:
    meet = filter_intersection(a.split("/"), b.split("/"))
    common = [t for t in TOPICS if topic_matches(a, t) and topic_matches(b, t)]
    assert filters_overlap(a, b) is bool(common)
    if meet is not None:
        meet_filter = "/".join(meet)
        assert [t for t in TOPICS if topic_matches(meet_filter, t)] == common


# --------------------------------------------------------------------------- TopicMap


def test_out_rule_strips_the_local_prefix_and_adds_the_remote_one() -> None:
    topics = TopicMap([OUT_ALL, IN_SET])
    assert topics.to_remote("gw/thermostat/state") == ("site1/gw/thermostat/state", 1)
    assert topics.to_remote("other/thermostat/state") is None
    assert topics.to_local("site1/gw/thermostat/set") == ("gw/thermostat/set", 1)
    assert topics.to_local("site1/gw/thermostat/state") is None  # the in rule is +/set only
    assert topics.local_subscriptions == (("gw/#", 1),)
    assert topics.remote_subscriptions == (("site1/gw/+/set", 1),)


def test_the_prefix_alone_is_not_a_topic_of_the_rule() -> None:
    """'gw/#' also matches 'gw' and 'gw/': neither is local_prefix + a non-empty T."""
    topics = TopicMap([OUT_ALL])
    assert topics.to_remote("gw") is None
    assert topics.to_remote("gw/") is None
    assert topics.to_remote("gw//x") == ("site1/gw//x", 1)


def test_first_matching_rule_wins() -> None:
    topics = TopicMap(
        [
            TopicRule("alarm/#", "out", 2, "gw/", "urgent/"),
            TopicRule("#", "out", 0, "gw/", "bulk/"),
        ]
    )
    assert topics.to_remote("gw/alarm/smoke") == ("urgent/alarm/smoke", 2)
    assert topics.to_remote("gw/kitchen/state") == ("bulk/kitchen/state", 0)


def test_direction_decides_which_way_a_rule_works() -> None:
    topics = TopicMap(
        [
            TopicRule("a/#", "in", 1, "", "r/"),
            TopicRule("b/#", "out", 1, "", "r/"),
            TopicRule("c/#", "both", 1, "", "r/"),
        ]
    )
    assert topics.to_remote("a/1") is None
    assert topics.to_remote("b/1") == ("r/b/1", 1)
    assert topics.to_remote("c/1") == ("r/c/1", 1)
    assert topics.to_local("r/a/1") == ("a/1", 1)
    assert topics.to_local("r/b/1") is None
    assert topics.to_local("r/c/1") == ("c/1", 1)
    assert topics.local_subscriptions == (("b/#", 1), ("c/#", 1))
    assert topics.remote_subscriptions == (("r/a/#", 1), ("r/c/#", 1))


def test_empty_prefixes_keep_the_topic() -> None:
    topics = TopicMap([TopicRule("home/#", "both", 1)])
    assert topics.to_remote("home/x") == ("home/x", 1)
    assert topics.to_local("home/x") == ("home/x", 1)


@pytest.mark.parametrize(
    "remote",
    [
        "cloud/gw/bridge/request/kick",  # the admin API
        "cloud/gw/bridge",
        "cloud/gw/bridge/upstream/cloud",  # the bridge's own state
        "cloud/$SYS/broker/uptime",
    ],
)
def test_upstream_messages_for_the_gateways_own_topics_are_dropped(remote: str) -> None:
    """An in rule with an empty local prefix could name any local topic: the gateway's own
    and '$' topics are never published from upstream, whatever the rule says."""
    topics = TopicMap([TopicRule("#", "in", 1, "", "cloud/")], topic_prefix="gw")
    assert topics.to_local(remote) is None
    assert topics.to_local("cloud/gw/bridgekeeper/x") == ("gw/bridgekeeper/x", 1)
    assert topics.to_local("cloud/gw/kitchen/set") == ("gw/kitchen/set", 1)


def test_the_private_area_follows_the_topic_prefix() -> None:
    topics = TopicMap([TopicRule("#", "in", 1, "", "c/")], topic_prefix="home/gw")
    assert topics.to_local("c/home/gw/bridge/request/x") is None
    assert topics.to_local("c/gw/bridge/request/x") == ("gw/bridge/request/x", 1)


def test_one_subscription_per_filter_at_the_highest_qos() -> None:
    """Two SUBSCRIBEs to one filter: the second replaces the first, QoS included."""
    topics = TopicMap([TopicRule("a/#", "out", 2, "", "x/"), TopicRule("a/#", "both", 0, "", "y/")])
    assert topics.local_subscriptions == (("a/#", 2),)
    assert topics.remote_subscriptions == (("y/a/#", 0),)


@pytest.mark.parametrize(
    "rule",
    [
        TopicRule("#", "out", 1, "gw/+/", "x/"),
        TopicRule("#", "out", 1, "gw/", "x/#/"),
        TopicRule("#", "out", 1, "gw", "x/"),  # 'gw#' is no filter
        TopicRule("a/#/b", "out", 1),
        TopicRule("", "out", 1),
        TopicRule("#", "out", 3),
        TopicRule("#", "sideways", 1),  # type: ignore[arg-type]
        TopicRule("#", "out", 1, "", "$share/g/"),
    ],
)
def test_topic_map_refuses_a_rule_without_valid_filters(rule: TopicRule) -> None:
    with pytest.raises(ValueError, match="topic rule 0"):
        TopicMap([rule])


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a\x00b", "NUL"),
        ("a\x01b", "control character (found U+0001)"),
        ("a\x7fb", "U+007F"),
        ("a\x9fb", "U+009F"),
        ("a\ufffeb", "non-character"),
        ("a\ufdd0b", "non-character"),
        ("a\U0001ffffb", "non-character"),
        ("a\ud800b", "lone surrogate"),
        ("é" * 32768, "at most 65535 bytes"),
    ],
)
def test_mqtt_string_problems(value: str, words: str) -> None:
    problem = mqtt_string_problem(value)
    assert problem is not None and words in problem


def test_mqtt_string_fine() -> None:
    for value in ("", "gw/", "wohnzimmer/größe", "日本/温度", "x" * 65535, "a\u00a0b"):
        assert mqtt_string_problem(value) is None


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("", "expected a topic filter"),
        ("a/#/b", "'#' must be a whole level and the last one"),
        ("a#", "'#' must be a whole level"),
        ("a+/b", "'+' must be a whole level"),
        ("$share/g/#", "shared subscription"),
        ("a\tb", "control character"),
    ],
)
def test_pattern_problems(pattern: str, words: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and words in problem


def test_patterns_fine() -> None:
    for pattern in ("#", "+", "+/set", "a/+/c/#", "/", "$SYS/#", "a//b"):
        assert pattern_problem(pattern) is None


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("gw", "ending with '/' (such as 'gw/')"),
        ("site1/gw", "'site1/gw/'"),
        ("gw/+/", "without wildcards"),
        ("#/", "without wildcards"),
        ("$share/g/", "shared subscription"),
        ("gw\x00/", "NUL"),
    ],
)
def test_prefix_problems(prefix: str, words: str) -> None:
    problem = prefix_problem(prefix)
    assert problem is not None and words in problem


def test_prefixes_fine() -> None:
    for prefix in ("", "gw/", "site1/gw/", "/", "$aws/things/gw1/", "a b/"):
        assert prefix_problem(prefix) is None


@pytest.mark.parametrize(
    ("topic", "words"),
    [("", "empty"), ("a/+", "wildcards"), ("a/#", "wildcards"), ("$SYS/x", "'$'")],
)
def test_notification_topic_problems(topic: str, words: str) -> None:
    problem = topic_name_problem(topic)
    assert problem is not None and words in problem


# --------------------------------------------------------------------------- local safety


@pytest.mark.parametrize(
    ("rule", "private"),
    [
        (TopicRule("request/#", "in", 1, "gw/bridge/", "x/"), True),
        (TopicRule("#", "in", 1, "gw/bridge/", "x/"), True),
        (TopicRule("bridge/#", "in", 1, "gw/", "x/"), True),
        (TopicRule("bridge", "in", 1, "gw/", "x/"), True),
        (TopicRule("$SYS/#", "in", 1, "", "x/"), True),
        (TopicRule("#", "in", 1, "$SYS/", "x/"), True),
        # Partly the gateway's own: allowed, those topics are dropped one by one.
        (TopicRule("+/set", "in", 1, "gw/", "x/"), False),
        (TopicRule("#", "in", 1, "", "x/"), False),
        (TopicRule("#", "in", 1, "gw/", "x/"), False),
        (TopicRule("bridgekeeper/#", "in", 1, "gw/", "x/"), False),
        (TopicRule("bridge/#", "in", 1, "other/", "x/"), False),
    ],
)
def test_only_private_local(rule: TopicRule, private: bool) -> None:
    assert only_private_local(rule, "gw") is private


def test_an_in_rule_into_the_admin_api_is_refused() -> None:
    rules = [OUT_ALL, TopicRule("request/+", "both", 1, "gw/bridge/", "cmd/")]
    with pytest.raises(UpstreamProblem) as caught:
        check_local_safety(rules, "gw")
    assert caught.value.key == "topics[1]"
    assert "'gw/bridge/request/+'" in caught.value.message
    assert "gw/bridge/..." in caught.value.message


def test_an_out_rule_from_the_gateways_own_topics_is_fine() -> None:
    """Sending the bridge's state up is monitoring, not a way in."""
    check_local_safety([TopicRule("#", "out", 1, "gw/bridge/", "site1/state/")], "gw")


def test_local_safety_follows_the_topic_prefix() -> None:
    rule = TopicRule("#", "in", 1, "home/gw/bridge/", "x/")
    check_local_safety([rule], "gw")
    with pytest.raises(UpstreamProblem):
        check_local_safety([rule], "home/gw")


# --------------------------------------------------------------------------- loops


def test_the_issues_example_loops_with_3_1_1() -> None:
    with pytest.raises(UpstreamProblem) as caught:
        check_v311_loops([OUT_ALL, IN_SET])
    problem = caught.value
    assert problem.key == "topics[1]"
    assert "topics[0] sends up on 'site1/gw/#'" in problem.message
    assert "topics[1] takes down 'site1/gw/+/set'" in problem.message
    assert "'site1/gw/x/set'" in problem.message
    assert "protocol 5" in problem.message


def test_both_loops_by_itself_with_3_1_1() -> None:
    with pytest.raises(UpstreamProblem) as caught:
        check_v311_loops([TopicRule("#", "both", 1, "gw/", "site1/gw/")])
    assert caught.value.key == "topics[0].direction"
    assert "'both' with protocol 3.1.1" in caught.value.message


def test_the_rules_are_named_in_order_whichever_comes_first() -> None:
    with pytest.raises(UpstreamProblem) as caught:
        check_v311_loops([IN_SET, TopicRule("x", "out"), OUT_ALL])
    assert caught.value.key == "topics[2]"
    assert "this rule and topics[0]" in caught.value.message


@pytest.mark.parametrize(
    "rules",
    [
        # Separate remote trees: up on site1/gw/..., down from cmd/site1/...
        [OUT_ALL, TopicRule("+/set", "in", 1, "gw/", "cmd/site1/")],
        [TopicRule("+/state", "out", 1, "gw/", "s/"), TopicRule("+/set", "in", 1, "gw/", "s/")],
        # The in rule takes exactly the out rule's prefix, which carries only longer topics.
        [TopicRule("#", "out", 1, "gw/", "s/gw/"), TopicRule("gw", "in", 1, "x/", "s/")],
        [TopicRule("#", "out", 1, "gw/", "s/gw/"), TopicRule("gw/", "in", 1, "x/", "s/")],
        # Below a wildcard pattern a rest starting with '$' is never carried.
        [TopicRule("#", "out", 1, "gw/", "s/"), TopicRule("$x/#", "in", 1, "x/", "s/")],
    ],
)
def test_rules_that_cannot_loop_are_accepted_with_3_1_1(rules: list[TopicRule]) -> None:
    check_v311_loops(rules)


def test_3_1_1_is_checked_for_loops_and_5_is_not() -> None:
    cfg = UpstreamConfig("cloud", "h", topics=(OUT_ALL, IN_SET))
    check_connection(cfg, "gw")
    with pytest.raises(UpstreamProblem):
        check_connection(replace(cfg, protocol=4), "gw")


def test_a_connection_needs_a_rule() -> None:
    with pytest.raises(UpstreamProblem, match="at least one topic rule"):
        check_connection(UpstreamConfig("cloud", "h"), "gw")


PREFIXES = st.sampled_from(("", "a/", "a/b/", "$a/", "b/"))


@st.composite
def rules(draw: st.DrawFn, direction: str) -> TopicRule:
    return TopicRule(draw(filters()), direction, 1, "", draw(PREFIXES))  # type: ignore[arg-type]


REMOTE_TOPICS = [
    "/".join(levels)
    for size in range(1, 6)
    for levels in itertools.product(("a", "b", "", "$a", "z"), repeat=size)
]


@settings(max_examples=300, deadline=None)
@given(rules("out"), rules("in"))
def test_remote_overlap_is_exact(out_rule: TopicRule, in_rule: TopicRule) -> None:
    """Against brute force: is there a remote topic the out rule can send up (remote_prefix
    + a non-empty T its pattern matches) that the in rule takes down?"""
    carried = [
        topic
        for topic in REMOTE_TOPICS
        if strip_prefix(topic, out_rule.remote_prefix, out_rule.pattern) is not None
        and strip_prefix(topic, in_rule.remote_prefix, in_rule.pattern) is not None
    ]
    example = remote_overlap(out_rule, in_rule)
    assert (example is not None) is bool(carried)
    if example is not None:
        for rule in (out_rule, in_rule):
            assert strip_prefix(example, rule.remote_prefix, rule.pattern) is not None


# --------------------------------------------------------------------------- connections


def upstream(name: str, host: str = "broker", **kw: object) -> UpstreamConfig:
    kw.setdefault("client_id", f"id-{name}")
    kw.setdefault("topics", (OUT_ALL,))
    return UpstreamConfig(name, host, **kw)  # type: ignore[arg-type]


def test_names_are_unique() -> None:
    with pytest.raises(UpstreamProblem) as caught:
        check_connections([upstream("a"), upstream("b", "other"), upstream("a", "third")])
    assert (caught.value.index, caught.value.key) == (2, "name")
    assert "upstream[0]" in caught.value.message


def test_one_client_id_twice_on_one_broker_is_refused() -> None:
    same = [upstream("a", client_id="gw1"), upstream("b", "BROKER.", client_id="gw1")]
    with pytest.raises(UpstreamProblem) as caught:
        check_connections(same)
    assert (caught.value.index, caught.value.key) == (1, "client_id")
    assert "disconnect the other" in caught.value.message
    check_connections([same[0], replace(same[1], port=8883)])  # another broker: fine


def test_two_connections_to_one_broker_that_would_loop_are_refused() -> None:
    """No Local spares a connection its own messages only: what one connection sends up,
    the other would bring down, and the first would send up again."""
    down = upstream("down", topics=(TopicRule("+/set", "in", 1, "gw/", "site1/gw/"),))
    with pytest.raises(UpstreamProblem) as caught:
        check_connections([upstream("up"), down])
    assert (caught.value.index, caught.value.key) == (1, "topics")
    assert "upstream[0].topics[0] sends up" in caught.value.message
    assert "upstream[1].topics[0] takes down" in caught.value.message
    check_connections([upstream("up"), replace(down, host="elsewhere")])


def test_one_topic_to_two_brokers_is_fine() -> None:
    check_connections([upstream("a", "broker-a"), upstream("b", "broker-b")])


@pytest.mark.parametrize("module", ["settings", "rules", "validate"])
def test_the_upstream_config_modules_are_pure(module: str) -> None:
    """The config reader, check-config and the bridge share them: standard library, the
    sans-I/O MQTT layer and each other only."""
    tree = ast.parse((REPO / "gateway" / "upstream" / f"{module}.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    allowed = ("gateway.mqtt.", "gateway.upstream.settings", "gateway.upstream.rules")
    for name in imported:
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top == "__future__" or name.startswith(allowed)
