"""ACL decisions: topic matching, subscribe coverage, patterns, defaults, reason codes."""

from __future__ import annotations

import pytest

from gateway.auth.acl import Acl, AclRule, BridgeGuard, topic_filter_problem

R, W, S = "read", "write", "subscribe"


def rule(topic: str, *actions: str, allow: bool = True, reason_code: int = 0x87) -> AclRule:
    return AclRule(
        topic=topic, actions=frozenset(actions or (R, W, S)), allow=allow, reason_code=reason_code
    )


# (rule filter, topic, matches?) for publish/read.
TOPIC_MATCH = [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a", False),
    ("a/#", "a", True),  # '#' includes the parent level
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),
    ("#", "anything/at/all", True),
    ("+/+", "a/b", True),
    ("+", "/a", False),
    ("+/a", "/a", True),  # empty first level
    ("#", "$SYS/broker/uptime", False),  # wildcards at the start never match $ topics
    ("+/broker/#", "$SYS/broker/x", False),
    ("$SYS/#", "$SYS/broker/x", True),
    ("$SYS/+/x", "$SYS/broker/x", True),
    ("a/b/", "a/b/", True),
    ("a/b/", "a/b", False),
]


@pytest.mark.parametrize(("flt", "topic", "expected"), TOPIC_MATCH)
def test_publish_and_read_matching(flt: str, topic: str, expected: bool) -> None:
    acl = Acl([rule(flt, R, W)], default="deny")
    assert acl.can_publish("u", "c", topic) is expected
    assert acl.can_receive("u", "c", topic) is expected


# (rule filter, requested filter, covered?) for subscribe.
COVERAGE = [
    ("a/b", "a/b", True),  # exact equality
    ("a/+", "a/+", True),
    ("a/#", "a/#", True),
    ("#", "#", True),
    ("a/#", "a", True),
    ("a/#", "a/+/c", True),
    ("a/#", "a/b/#", True),
    ("a/+", "a/b", True),
    ("+/b", "a/b", True),
    ("a/b", "a/+", False),  # the request reaches topics the rule does not
    ("a/+", "a/#", False),
    ("a/+", "a/b/c", False),
    ("a/b", "a/#", False),
    ("a/b/#", "a/#", False),
    ("a/#", "b/#", False),
    ("#", "$SYS/#", False),
    ("+/#", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker/+", True),
    ("$SYS/#", "#", False),
    ("#", "+/x", True),  # '+' first never reaches $ topics, so '#' covers it
    ("test/nosubscribe", "test/nosubscribe", True),
    ("test/nosubscribe", "test/#", False),
]


@pytest.mark.parametrize(("flt", "requested", "expected"), COVERAGE)
def test_subscribe_coverage(flt: str, requested: str, expected: bool) -> None:
    acl = Acl([rule(flt, S)], default="deny")
    assert (acl.subscribe_refusal("u", "c", requested) == 0) is expected


def test_shared_subscription_checked_on_its_topic_filter() -> None:
    acl = Acl([rule("a/#", S)], default="deny")
    assert acl.subscribe_refusal("u", "c", "$share/group/a/b") == 0
    assert acl.subscribe_refusal("u", "c", "$share/group/b") == 0x87


def test_first_match_wins() -> None:
    acl = Acl([rule("a/secret", allow=False), rule("a/#")], default="deny")
    assert not acl.can_publish("u", "c", "a/secret")
    assert acl.can_publish("u", "c", "a/public")
    reversed_acl = Acl([rule("a/#"), rule("a/secret", allow=False)], default="deny")
    assert reversed_acl.can_publish("u", "c", "a/secret")


def test_actions_are_separate() -> None:
    acl = Acl([rule("t", R)], default="deny")
    assert acl.can_receive("u", "c", "t")
    assert not acl.can_publish("u", "c", "t")
    assert acl.subscribe_refusal("u", "c", "t") == 0x87
    # A rule for other actions does not stop the search: the next rule decides.
    acl = Acl([rule("t", W, allow=False), rule("t", R, W, S)], default="deny")
    assert acl.can_receive("u", "c", "t")
    assert not acl.can_publish("u", "c", "t")


@pytest.mark.parametrize("default", ["allow", "deny"])
def test_default_when_nothing_matches(default: str) -> None:
    acl = Acl([rule("only/this")], default=default)  # type: ignore[arg-type]
    allowed = default == "allow"
    assert acl.can_publish("u", "c", "other") is allowed
    assert acl.can_receive("u", "c", "other") is allowed
    assert acl.subscribe_refusal("u", "c", "other") == (0 if allowed else 0x87)
    empty = Acl([], default=default)  # type: ignore[arg-type]
    assert empty.can_publish(None, "c", "x") is allowed


def test_custom_reason_code_for_refused_subscription() -> None:
    acl = Acl([rule("test/nosubscribe", S, allow=False, reason_code=0x80)])
    assert acl.subscribe_refusal(None, "c", "test/nosubscribe") == 0x80
    assert acl.subscribe_refusal(None, "c", "test/other") == 0
    assert acl.can_publish(None, "c", "test/nosubscribe")  # subscribe-only rule


def test_user_and_client_substitution() -> None:
    acl = Acl(
        [rule("users/%u/#"), rule("devices/%c/+"), rule("mixed/%u/%c")],
        default="deny",
    )
    assert acl.can_publish("bob", "c1", "users/bob/x")
    assert not acl.can_publish("bob", "c1", "users/alice/x")
    assert acl.can_publish("bob", "c1", "devices/c1/cmd")
    assert not acl.can_publish("bob", "c1", "devices/c2/cmd")
    assert acl.can_publish("bob", "c1", "mixed/bob/c1")
    assert not acl.can_publish("bob", "c1", "mixed/c1/bob")
    assert acl.subscribe_refusal("bob", "c1", "users/bob/#") == 0
    assert acl.subscribe_refusal("bob", "c1", "users/+/#") == 0x87
    # Anonymous clients have no name to put in %u.
    assert not acl.can_publish(None, "c1", "users//x")
    assert not acl.can_publish(None, "c1", "users/None/x")
    assert acl.can_publish(None, "c1", "devices/c1/cmd")


@pytest.mark.parametrize("client_id", ["bob/x", "+", "#", "a+b"])
def test_substitution_refuses_names_that_change_the_filter(client_id: str) -> None:
    acl = Acl([rule("devices/%c/#")], default="deny")
    assert not acl.can_publish("u", client_id, f"devices/{client_id}/x")
    assert not acl.can_publish("u", client_id, "devices/bob/x/y")
    assert acl.subscribe_refusal("u", client_id, f"devices/{client_id}/#") == 0x87


def test_user_and_client_globs() -> None:
    acl = Acl(
        [
            AclRule(user="sensor-*", topic="sensors/#"),
            AclRule(client_id="tui-?", topic="ui/#"),
            AclRule(user="?*", topic="members/#"),
            AclRule(user="", topic="anon/#"),
        ],
        default="deny",
    )
    assert acl.can_publish("sensor-7", "x", "sensors/t")
    assert not acl.can_publish("other", "x", "sensors/t")
    assert acl.can_publish(None, "tui-1", "ui/x")
    assert not acl.can_publish(None, "tui-12", "ui/x")
    assert acl.can_publish("bob", "c", "members/x")
    assert not acl.can_publish(None, "c", "members/x")  # '?*' excludes anonymous
    assert acl.can_publish(None, "c", "anon/x")
    assert not acl.can_publish("bob", "c", "anon/x")


def test_admin_users_bypass_rules() -> None:
    acl = Acl([rule("#", allow=False), rule("$SYS/#", allow=False)], "deny", admin_users=["root"])
    assert acl.can_publish("root", "c", "gw/bridge/request/kick")
    assert acl.can_receive("root", "c", "$SYS/broker/uptime")
    assert acl.subscribe_refusal("root", "c", "#") == 0
    assert not acl.can_publish("bob", "c", "gw/bridge/request/kick")
    assert not acl.can_publish(None, "root", "x")  # a client id is not a user name


def test_dollar_sys_denied_by_default_deny_even_with_hash_rule() -> None:
    acl = Acl([rule("#")], default="deny")
    assert acl.can_receive("u", "c", "a/b")
    assert not acl.can_receive("u", "c", "$SYS/broker/clients")
    assert acl.subscribe_refusal("u", "c", "$SYS/#") == 0x87


def test_cache_is_per_identity() -> None:
    acl = Acl([rule("devices/%c/#")], default="deny")
    for index in range(5000):  # past the cache limit: entries are recomputed, not wrong
        assert acl.can_publish("u", f"c{index}", f"devices/c{index}/x")
        assert not acl.can_publish("u", f"c{index}", "devices/other/x")
    acl.forget("u", "c1")
    assert acl.can_publish("u", "c1", "devices/c1/x")


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        Acl([AclRule(topic="a/#/b")])
    with pytest.raises(ValueError):
        Acl([AclRule(actions=frozenset({"publish"}))])
    with pytest.raises(ValueError):
        Acl([], default="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flt", "ok"),
    [("a/b", True), ("#", True), ("a/+/c", True), ("a/#", True), ("", False), ("a/#/b", False),
     ("a#", False), ("a/b+", False), ("+a", False), ("%u/#", True)],
)  # fmt: skip
def test_topic_filter_problem(flt: str, ok: bool) -> None:
    assert (topic_filter_problem(flt) is None) is ok


# --- the built-in guard of <prefix>/bridge/ ---------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "publish", "receive"),
    [
        ("gw/bridge/request/kick", False, False),
        ("gw/bridge/request", False, False),
        ("gw/bridge/response/sessions", False, False),
        ("gw/bridge/updates/devices", False, False),
        ("gw/bridge/events", False, False),
        ("gw/bridge/state", False, True),
        ("gw/bridge/devices", False, True),
        ("gw/bridge/policy/thermo", False, True),
        ("gw/bridge", False, True),
        ("gw/bridgework/request/x", True, True),  # not below gw/bridge
        ("gw/thermo/set", True, True),
        ("other/bridge/request/x", True, True),
    ],
)
def test_bridge_guard_topics(topic: str, publish: bool, receive: bool) -> None:
    guard = BridgeGuard("gw")
    assert guard.can_publish("bob", "c", topic) is publish
    assert guard.can_receive("bob", "c", topic) is receive
    assert guard.can_publish(None, "c", topic) is publish


@pytest.mark.parametrize(
    ("flt", "code"),
    [
        ("gw/bridge/response/#", 0x87),
        ("gw/bridge/request/+", 0x87),
        ("gw/bridge/events", 0x87),
        ("gw/bridge/updates/#", 0x87),
        ("$share/grp/gw/bridge/response/#", 0x87),
        ("gw/bridge/state", 0),
        ("gw/bridge/+", 0),  # state and devices too: granted, the rest filtered per message
        ("gw/bridge/#", 0),
        ("gw/#", 0),
        ("#", 0),
        ("gw/+/response/x", 0),
    ],
)
def test_bridge_guard_subscriptions(flt: str, code: int) -> None:
    assert BridgeGuard("gw").subscribe_refusal("bob", "c", flt) == code


def test_bridge_guard_prefix_admins_and_inner_rules() -> None:
    guard = BridgeGuard("home/gw", admin_users=["root"])
    assert guard.restricted_prefix == "home/gw/bridge"
    assert not guard.can_publish("bob", "c", "home/gw/bridge/request/x")
    assert guard.can_publish("bob", "c", "gw/bridge/request/x")
    assert guard.can_publish("root", "c", "home/gw/bridge/request/x")
    assert guard.can_receive("root", "c", "home/gw/bridge/events")
    assert guard.subscribe_refusal("root", "c", "home/gw/bridge/response/#") == 0
    # With ACL rules behind it, the guard comes first and the rules decide the rest.
    inner = Acl([rule("gw/#"), rule("#", allow=False, reason_code=0x80)], "deny")
    guard = BridgeGuard("gw", inner)
    assert guard.restricted_prefix is None  # every topic needs the rules
    assert not guard.can_publish("bob", "c", "gw/bridge/request/x")  # allowed by the rules
    assert guard.subscribe_refusal("bob", "c", "gw/bridge/events") == 0x87
    assert guard.can_publish("bob", "c", "gw/thermo/set")
    assert not guard.can_publish("bob", "c", "elsewhere")
    assert guard.subscribe_refusal("bob", "c", "elsewhere/#") == 0x80
    assert guard.can_receive("bob", "c", "gw/bridge/state")
    assert not guard.can_receive("bob", "c", "elsewhere")
