"""Topic names and filters (MQTT 5.0 §4.7): matching, pure functions on split levels."""

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
