"""setuptools' build backend, plus mypy as a build requirement when EDGE_GATEWAY_MYPYC=1.

mypyc comes with mypy (about 13 MB), which the default plain-Python install must not have to
fetch; PEP 517 lets a backend name its requirements per build, so they are added only when
setup.py is going to compile (see its docstring).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every other hook unchanged)

ENV = "EDGE_GATEWAY_MYPYC"
# The mypy the test extras use: the sources are checked with it, so it accepts them.
MYPY_REQUIREMENT = "mypy>=1.10"


@contextlib.contextmanager
def _plain_setup() -> Iterator[None]:
    # setuptools runs setup.py to collect its requirements, before any is installed: that run
    # must not try to compile (mypyc is not there yet), and nothing it builds is kept.
    saved = os.environ.get(ENV)
    os.environ[ENV] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = saved


def _requires(hook: Callable[[Any], list[str]], config_settings: Any) -> list[str]:
    wanted = os.environ.get(ENV, "").strip() == "1"
    with _plain_setup():
        base = hook(config_settings)
    return [*base, MYPY_REQUIREMENT] if wanted else base


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires(_setuptools.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires(_setuptools.get_requires_for_build_editable, config_settings)
