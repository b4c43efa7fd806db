"""Topic names and filters (MQTT 5.0 §4.7): validity checks, and matching on split levels."""

from __future__ import annotations

from collections.abc import Sequence


def filter_matches(flt: tuple[str, ...], levels: Sequence[str]) -> bool:
    """MQTT topic matching of a split filter against a split topic name."""
    if levels[0][:1] == "$" and flt[0] in ("+", "#"):
        return False
    count = len(levels)
    for index, part in enumerate(flt):
        if part == "#":
            return True
        if index >= count:
            return False
        if part != "+" and part != levels[index]:
            return False
    return len(flt) == count


def filter_covers(flt: tuple[str, ...], requested: Sequence[str]) -> bool:
    """True if every topic matched by ``requested`` is matched by ``flt``."""
    if requested[0][:1] == "$" and flt[0] in ("+", "#"):
        return False
    count = len(requested)
    for index, part in enumerate(flt):
        if part == "#":
            return True
        if index >= count:
            return False
        wanted = requested[index]
        if wanted == "#":
            return False
        if part == "+":
            continue
        if wanted == "+" or part != wanted:
            return False
    return len(flt) == count


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Does ``topic_filter`` match the topic name ``topic``?"""
    return filter_matches(tuple(topic_filter.split("/")), topic.split("/"))


def _meet_level(a: str, b: str) -> str | None:
    if a == "+":
        return b
    if b == "+" or a == b:
        return a
    return None


def filter_intersection(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...] | None:
    """The split filter that matches exactly the topics both split filters match; None if no
    topic matches both.

    The meet of two filters is always a filter: level by level, a literal beats '+', and a
    '#' takes the rest of the other filter (none of it: '#' also matches its parent level).
    """
    if (a[0] in ("+", "#") and b[0][:1] == "$") or (b[0] in ("+", "#") and a[0][:1] == "$"):
        return None
    meet: list[str] = []
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else None
        right = b[index] if index < len(b) else None
        if left == "#":
            return (*meet, *b[index:])
        if right == "#":
            return (*meet, *a[index:])
        if left is None or right is None:
            return None  # one needs more levels than the other allows
        level = _meet_level(left, right)
        if level is None:
            return None
        meet.append(level)
    return tuple(meet)


def filters_overlap(a: str, b: str) -> bool:
    """Can one topic match both filters ``a`` and ``b``?"""
    return filter_intersection(a.split("/"), b.split("/")) is not None


def is_valid_topic_name(topic: str) -> bool:
    """A non-empty topic name without wildcards or U+0000 (5.0 §4.7, 3.1.1 §4.7)."""
    return bool(topic) and "+" not in topic and "#" not in topic and "\x00" not in topic


def _filter_levels_ok(topic_filter: str) -> bool:
    if not topic_filter or "\x00" in topic_filter:
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return True
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def is_valid_topic_filter(topic_filter: str) -> bool:
    """Wildcards well placed (5.0 §4.7.1); ``$share/{name}/{filter}`` well formed (§4.8.2)."""
    if topic_filter.startswith("$share/"):
        name, sep, rest = topic_filter[7:].partition("/")
        if not name or not sep or "+" in name or "#" in name:
            return False
        return _filter_levels_ok(rest)
    return _filter_levels_ok(topic_filter)
