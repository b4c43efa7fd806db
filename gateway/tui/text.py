"""Text for the screen: strings from the network made safe to show, figures written short."""

from __future__ import annotations

import json
import re


def compact_json(value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Control characters written out (``\\x1b``) instead of sent to the terminal: client ids,
    device names, topics and upstream errors come from the network, and an escape sequence
    in one would drive the operator's terminal (clear it, recolour it, retitle it)."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines would break a table row
    return text if len(text) <= width else text[: width - 1] + "…"


def fmt_duration(seconds: float) -> str:
    """A short, sortable-by-eye duration: 45s, 12m, 3h05m, 2d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def fmt_ago(ts: float | None, now: float) -> str:
    return "-" if ts is None else f"{fmt_duration(now - ts)} ago"


def fmt_until(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    if ts <= now:
        return "expired"
    return fmt_duration(ts - now)


def fmt_rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 10 or per_second == 0 else f"{per_second:.1f}"


def protocol_name(level: int) -> str:
    """As config.yaml writes it: 3.1.1, not 4."""
    return {3: "3.1", 4: "3.1.1", 5: "5"}.get(level, str(level) if level else "?")
