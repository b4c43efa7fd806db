"""Which hot pure modules run as mypyc-compiled extensions (an opt-in build; see setup.py).

``EDGE_GATEWAY_MYPYC=1 pip install .`` compiles :data:`MYPYC_MODULES` to C extensions and
installs them next to their unchanged ``.py`` sources; the default install and a source
checkout run them as plain Python. Both behave the same, so the only visible difference is
speed, and ``edge-gateway --version`` reports which one is in use. Standard library only:
setup.py reads the list from here before anything is built.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Final

# The codec (framing, packet bodies, properties, topic checks) and the subscription trie:
# the per-message work of the broker that touches no I/O. packets.py stays interpreted: its
# dataclasses are the values every layer builds, copies and compares, and its Publish fast
# constructor relies on the slot descriptors of an interpreted class. errors.py is raised on
# bad input only, off the hot path.
MYPYC_MODULES: Final = (
    "gateway.mqtt.decoding",
    "gateway.mqtt.encoding",
    "gateway.mqtt.properties",
    "gateway.mqtt.stream",
    "gateway.mqtt.topics",
    "gateway.broker.topic_tree",
)


def is_compiled(module_name: str) -> bool:
    """Whether ``module_name`` is (or, if not yet imported, would be) an extension module."""
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        spec = importlib.util.find_spec(module_name)
        origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    return [name for name in MYPYC_MODULES if is_compiled(name)]


def describe() -> str:
    """One line for ``--version`` and the benchmarks' headers."""
    done = compiled_modules()
    if not done:
        return "pure Python"
    if len(done) == len(MYPYC_MODULES):
        return f"mypyc-compiled codec and topic tree ({len(done)} modules)"
    # A partial build (e.g. one extension deleted by hand) runs, but should not look complete.
    return f"mypyc-compiled: {', '.join(done)}; the rest of {len(MYPYC_MODULES)} pure Python"
