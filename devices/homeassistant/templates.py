"""The Jinja expressions and JSON text that discovery payloads are written in.

Home Assistant renders each template against the message on the entity's state topic, parsed
as ``value_json``; these build the expressions that reach into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

ON, OFF = "ON", "OFF"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def ref(path: Iterable[str]) -> str:
    """A Jinja expression for a value inside ``value_json``.

    Dotted access is tried as an attribute first, so a key such as ``values`` or ``items`` would
    find the dict's method: those, and keys that are not identifiers, use subscripts.
    """
    expr = "value_json"
    for key in path:
        if _IDENTIFIER.fullmatch(key) and not hasattr(dict, key):
            expr += f".{key}"
        else:
            expr += f"[{json.dumps(key)}]"
    return expr


def value_template(path: tuple[str, ...]) -> str:
    return "{{ " + ref(path) + " }}"


def on_off_template(path: tuple[str, ...]) -> str:
    # Rendering a JSON true directly would give Python's "True"; spelling the payloads out
    # keeps the contract independent of how the template engine prints booleans.
    return "{{ '" + ON + "' if " + ref(path) + " else '" + OFF + "' }}"


def compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def humanize(key: str) -> str:
    return key.replace(":", " ").replace("_", " ").capitalize()
