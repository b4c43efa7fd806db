"""Opt-in mypyc build of the hot pure modules; the project's metadata is in pyproject.toml.

    pip install .                         # plain Python, as without this file
    EDGE_GATEWAY_MYPYC=1 pip install .    # also compiles gateway.compiled.MYPYC_MODULES

The compiled modules are C extensions installed next to their unchanged ``.py`` sources, which
Python then prefers; ``edge-gateway --version`` says which is in use. mypyc ships with mypy:
the build backend in build_support/ asks for it only when the variable is set. Compile with a
non-editable install: an editable one would leave the extensions in the source tree, where
they would shadow the sources being edited.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
ENV = "EDGE_GATEWAY_MYPYC"


def mypyc_wanted(environ: Mapping[str, str]) -> bool:
    value = environ.get(ENV, "").strip()
    if value not in ("", "0", "1"):
        raise SystemExit(f"{ENV} must be 1 (compile with mypyc) or 0/unset (plain Python)")
    return value == "1"


def module_paths() -> list[str]:
    sys.path.insert(0, str(HERE))
    try:
        from gateway.compiled import MYPYC_MODULES
    finally:
        sys.path.pop(0)
    # Relative to the project root, from which mypyc derives the module names.
    return [name.replace(".", "/") + ".py" for name in MYPYC_MODULES]


def ext_modules() -> list[object]:
    if not mypyc_wanted(os.environ):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            f"{ENV}=1 needs mypyc, which comes with mypy: `pip install .` installs it for the "
            "build; with --no-build-isolation, `pip install mypy` first"
        ) from None
    os.chdir(HERE)
    # group_name: the runtime shared by the compiled modules becomes gateway__mypyc.*.so,
    # a name of our own in site-packages rather than a hash.
    return list(mypycify(module_paths(), opt_level="3", group_name="gateway"))


if __name__ == "__main__":
    setup(ext_modules=ext_modules())
