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


def _project_classes() -> dict[str, list[str]]:
    """Every class defined in gateway/ and devices/, by name, with the names of its bases."""
    found: dict[str, list[str]] = {}
    for package in ("gateway", "devices"):
        for path in modules(package):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                    found.setdefault(node.name, []).extend(bases)
    return found


def test_broker_core_is_composed_not_inherited() -> None:
    """No class in gateway/broker inherits from another class of the project: the core is
    made of parts that own their data (issue 12), not a tower of mixins sharing one state.
    Protocols, exceptions and records (NamedTuple, Enum, dataclasses) are the exceptions."""
    project = _project_classes()

    def exempt(name: str) -> bool:
        bases = project.get(name, [])
        return "Protocol" in bases or any(b.endswith(("Error", "Exception")) for b in bases)

    bad = []
    for path in modules("gateway.broker"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            for base in node.bases:
                name = ast.unparse(base).rsplit(".", 1)[-1]
                if name in project and not exempt(name):
                    bad.append(f"{path.relative_to(REPO)}: {node.name}({name})")
    assert bad == []


def test_broker_core_has_no_import_cycle() -> None:
    """The broker's modules import one another one way only (a module-level import cycle
    would mean two parts that cannot be understood apart)."""
    graph = {
        "gateway.broker." + path.stem: {
            name for name in imports_of(path) if name.startswith("gateway.broker.")
        }
        for path in modules("gateway.broker")
    }
    for path in modules("gateway.broker"):
        # "from gateway.broker import admin, connect": the modules named, not the package.
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "gateway.broker":
                graph["gateway.broker." + path.stem].update(
                    "gateway.broker." + alias.name for alias in node.names
                )
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*trail[trail.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
