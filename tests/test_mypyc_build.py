"""The opt-in mypyc build (setup.py, build_support/, gateway/compiled.py) and the pure path.

The default suite runs the plain Python sources; the slow test compiles what
``EDGE_GATEWAY_MYPYC=1 pip install .`` compiles, in a copy of the sources, and runs the codec
and topic tree tests against it.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.compiled import MYPYC_MODULES

REPO = Path(__file__).resolve().parent.parent
# The tests of the compiled modules' behaviour, run again against the compiled build.
COMPILED_MODULE_TESTS = (
    "tests/test_codec_roundtrip.py",
    "tests/test_codec_vectors.py",
    "tests/test_codec_malformed.py",
    "tests/test_packet_size.py",
    "tests/test_aliases.py",
    "tests/test_topic_tree.py",
)


def _run(argv: list[str], cwd: Path, timeout: float, **env: str) -> str:
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


# Imports the hot modules with extension modules out of reach (only .py sources are found),
# as in a default install, then uses them and prints what --version says.
PURE_ONLY = textwrap.dedent(
    """
    import importlib.machinery as m, sys
    from gateway.compiled import MYPYC_MODULES

    class SourceOnly:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name not in MYPYC_MODULES:
                return None
            loader = (m.SourceFileLoader, m.SOURCE_SUFFIXES)
            for entry in path or sys.path:
                spec = m.FileFinder(entry, loader).find_spec(name)
                if spec is not None:
                    return spec
            return None

    sys.meta_path.insert(0, SourceOnly)
    from gateway.broker.records import SubscriptionRecord
    from gateway.broker.topic_tree import SubscriptionTree
    from gateway.compiled import compiled_modules
    from gateway.mqtt.codec import StreamDecoder, encode
    from gateway.mqtt.packets import Publish

    wire = encode(Publish("a/b", b"hi", qos=1, packet_id=7), 5)
    assert StreamDecoder(protocol_version=5).feed(wire)[0].payload == b"hi"
    tree = SubscriptionTree()
    tree.add(SubscriptionRecord("c1", "a/+", 1))
    assert [t.client_id for t in tree.match("a/b").targets] == ["c1"]
    assert compiled_modules() == [], compiled_modules()
    for name in MYPYC_MODULES:
        assert sys.modules[name].__file__.endswith(".py"), sys.modules[name].__file__
    from gateway.cli import main
    main(["--version"])
    """
)


def test_hot_modules_work_as_plain_python_without_their_extensions() -> None:
    out = _run([sys.executable, "-c", PURE_ONLY], REPO, 60)
    assert out.strip().endswith("(pure Python)")


def _setup_py() -> dict[str, Any]:
    return runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")


def test_setup_compiles_nothing_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    setup_py = _setup_py()
    monkeypatch.delenv("EDGE_GATEWAY_MYPYC", raising=False)
    assert setup_py["ext_modules"]() == []
    monkeypatch.setenv("EDGE_GATEWAY_MYPYC", "0")
    assert setup_py["ext_modules"]() == []


def test_setup_refuses_an_unclear_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GATEWAY_MYPYC", "yes")
    with pytest.raises(SystemExit, match="must be 1"):
        _setup_py()["ext_modules"]()


def test_every_listed_module_is_a_source_file() -> None:
    paths = _setup_py()["module_paths"]()
    assert len(paths) == len(MYPYC_MODULES)
    assert all((REPO / p).is_file() for p in paths)


BACKEND_REQUIRES = (
    "import sys; sys.path.insert(0, 'build_support'); import mypyc_opt_in as b; "
    "print(' '.join(b.get_requires_for_build_wheel()))"
)


def test_build_backend_asks_for_mypy_only_for_the_compiled_build() -> None:
    plain = _run([sys.executable, "-c", BACKEND_REQUIRES], REPO, 120, EDGE_GATEWAY_MYPYC="")
    assert "mypy" not in plain
    # setup.py runs plain during this pass even when asked to compile, or it would fail here
    # without mypy: hide mypyc from it to be sure of that.
    compiled = _run(
        [sys.executable, "-c", "import sys; sys.modules['mypyc'] = None; " + BACKEND_REQUIRES],
        REPO,
        120,
        EDGE_GATEWAY_MYPYC="1",
    )
    assert "mypy>=" in compiled


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "build")
    for name in ("gateway", "devices", "build_support"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)


# Loads the compiled modules first, so that the test run cannot fall back to the sources.
RUN_TESTS_COMPILED = textwrap.dedent(
    """
    import importlib, sys
    import pytest
    from gateway.compiled import MYPYC_MODULES, compiled_modules

    for name in MYPYC_MODULES:
        importlib.import_module(name)
    assert compiled_modules() == list(MYPYC_MODULES), compiled_modules()
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
    """
)


@pytest.mark.slow
def test_compiled_build_passes_the_codec_and_topic_tree_tests(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    # What `EDGE_GATEWAY_MYPYC=1 pip install .` compiles, built in place with this venv's
    # mypy and setuptools: no download, and no `wheel` package needed.
    _run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        tmp_path,
        900,
        EDGE_GATEWAY_MYPYC="1",
    )
    shutil.copytree(
        REPO / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )

    version = _run([sys.executable, "-m", "gateway", "--version"], tmp_path, 60)
    assert f"(mypyc-compiled codec and topic tree ({len(MYPYC_MODULES)} modules))" in version
    out = _run([sys.executable, "-c", RUN_TESTS_COMPILED, *COMPILED_MODULE_TESTS], tmp_path, 900)
    assert " passed" in out and "failed" not in out

    # The end-to-end bench can start the gateway from the compiled tree, and says so.
    bench = [sys.executable, str(REPO / "bench" / "bench_broker.py"), "--quick", "--no-mosquitto"]
    bench += ["--workloads", "qos1-clean", "--gateway-tree", str(tmp_path)]
    out = _run(bench, REPO, 120)
    assert "gateway build: mypyc-compiled codec and topic tree" in out
    assert "load generator codec: pure Python" in out
    assert re.search(r"^gateway\s+qos1-clean\s+[\d,.]+ msgs/s\s+1000/1000", out, re.M), out
