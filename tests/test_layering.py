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


def test_gateway_does_not_import_devices_outside_the_composition_root() -> None:
    """gateway/ sits below devices/: what both need (device policy, GATT profiles, demo ids)
    is in gateway/devicetypes/, and only the composition root wires the device layer in."""
    roots = {"gateway/app.py", "gateway/cli.py"}
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in modules("gateway")
        if str(path.relative_to(REPO)) not in roots
        for name in sorted(imports_of(path))
        if name == "devices" or name.startswith("devices.")
    ]
    assert bad == []


def test_shared_device_types_need_only_the_standard_library() -> None:
    """gateway/devicetypes/ is imported by config, admin, TUI and devices alike."""
    layer = ("gateway.devicetypes", "gateway.commands")
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in modules("gateway.devicetypes")
        for name in sorted(imports_of(path))
        if not allowed(name, layer)
    ]
    assert bad == []


# --- no import cycles (issue 12) -----------------------------------------------------------------
# Every import counts, those under ``if TYPE_CHECKING:`` included: a cycle that only the type
# checker sees is still two modules that must be read together (the server circle of issue 12
# was one), and the way out, a Protocol owned by the lower module, costs nothing at run time.
# Implicit imports of parent packages (``import a.b`` runs a/__init__.py) are not edges.


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports: ``from a import b`` means module a.b if there is
    one, else a; relative imports resolved against the module's package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.add(child if child in known else module)
    return {m for m in found if m in known and m != name}


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    paths = {
        _module_name(root, path): path
        for package in packages
        for path in (root / package).rglob("*.py")
    }
    known = set(paths)
    return {name: _imported_modules(name, path, known) for name, path in paths.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in order:
            continue
        work = [(start, iter(sorted(graph[start])))]
        order[start] = low[start] = len(order)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in order:
                    order[nxt] = low[nxt] = len(order)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == order[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def test_cycle_finder_sees_type_checking_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n"
    )
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg.a import thing\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.d"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (pkg / "c.py").write_text("")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == []


def test_no_import_cycles_in_gateway_and_devices() -> None:
    assert import_cycles(import_graph(REPO, ("gateway", "devices"))) == []


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
