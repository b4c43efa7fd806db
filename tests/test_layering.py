"""The import rules of DESIGN §5, checked on the source (one-way data flow)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO / package.replace(".", "/")).rglob("*.py"))


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    top = name.split(".")[0]
    return top in STDLIB or any(name == p or name.startswith(p + ".") for p in prefixes)


RULES = {
    # Sans-I/O protocol code: standard library only.
    "gateway.mqtt": ("gateway.mqtt",),
    # Pure core: protocol values and itself, nothing that does I/O.
    "gateway.broker": ("gateway.broker", "gateway.mqtt", "gateway.commands"),
    # Command schemas: shared by the broker, the devices and the TUI, so standard library only.
    "gateway.commands": ("gateway.commands",),
    # The store knows the broker's records and nothing above them.
    "gateway.persistence": (
        "gateway.persistence",
        "gateway.broker.records",
        "gateway.mqtt",
        "aiosqlite",
    ),
    "gateway.auth": (
        "gateway.auth",
        "gateway.broker.access",
        "gateway.broker.effects",
        "gateway.mqtt",
    ),
    # websockets: its sans-I/O protocol for the ws/wss listeners (gateway/server/websocket.py).
    "gateway.server": ("gateway.server", "gateway.broker", "gateway.mqtt", "websockets"),
    # The gateway's own MQTT client (devices, admin service, TUI, upstream bridge): it talks
    # MQTT and knows nothing of the broker it talks to.
    "gateway.client": ("gateway.client", "gateway.mqtt"),
    # The upstream bridge is an MQTT client of both brokers; what it needs to know of the
    # local one comes as plain values from the composition root (upstream/local.py).
    "gateway.upstream": ("gateway.upstream", "gateway.client", "gateway.mqtt"),
}


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_only_what_its_layer_may(package: str) -> None:
    files = modules(package)
    assert files, f"no modules found for {package}"
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in files
        for name in sorted(imports_of(path))
        if not allowed(name, RULES[package])
    ]
    assert bad == []


def test_devices_talk_mqtt_only() -> None:
    forbidden = ("gateway.broker", "gateway.server", "gateway.persistence", "gateway.app")
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in modules("devices")
        for name in sorted(imports_of(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []


def test_only_the_composition_root_wires_components() -> None:
    """Server, store and broker core meet in gateway/app.py and nowhere else."""
    wiring = ("gateway.server.server", "gateway.persistence")
    users = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "gateway").rglob("*.py")
        if not str(path.relative_to(REPO)).startswith(("gateway/server/", "gateway/persistence/"))
        and any(n == w or n.startswith(w + ".") for n in imports_of(path) for w in wiring)
    )
    assert users == ["gateway/app.py"]


def test_tui_is_an_mqtt_client_only() -> None:
    """The terminal UI reaches the gateway over MQTT (the admin API), never its insides."""
    forbidden = ("gateway.broker", "gateway.server", "gateway.persistence", "gateway.app")
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in modules("gateway.tui")
        for name in sorted(imports_of(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []


STORE_OP_NAMES = frozenset(
    f"{verb}{what}"
    for verb in ("Put", "Delete")
    for what in ("Session", "Subscription", "Message", "QueueEntry", "InboundQos2", "Retained")
)


def test_store_ops_mean_one_thing_and_sqlite_has_its_own_thread() -> None:
    """What a store op does is written once (persistence/tables.py); the stores and the SQL
    work on the tables it fills, never on the ops (limit.py only sizes them up). And the SQLite
    connection lives in the store's own thread (dbthread.py), not behind aiosqlite's privates."""
    op_users = {"tables.py", "limit.py"}
    for path in modules("gateway.persistence"):
        names = {
            alias.name
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        if path.name not in op_users:
            assert not names & STORE_OP_NAMES, f"{path.name} interprets store ops itself"
        assert not any(name.startswith("aiosqlite") for name in imports_of(path)), path.name
    fake_store = REPO / "tests" / "test_broker_support.py"
    assert "gateway.persistence.tables" in imports_of(fake_store)
