"""The shape of `proxy/`: layers, no import cycle, and a pure layer that does no I/O.

Imports are read with `ast`, all of them: module-level, inside functions, and under
`TYPE_CHECKING`. A module may import only from layers below its own. Every module must be
placed in a layer here, so a new one is a conscious decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "proxy"

# Bottom to top. A package name stands for all its modules (they may import each other, without cycles).
LAYERS: list[tuple[str, ...]] = [
    # pure: no I/O, no event loop
    ("proxy", "proxy.apis", "proxy.errors"),
    ("proxy.translate", "proxy.cache", "proxy.routing"),
    ("proxy.wire", "proxy.body", "proxy.limits", "proxy.prices", "proxy.request_head", "proxy.model_list", "proxy.endpoints"),
    ("proxy.overrides", "proxy.tags", "proxy.user_limits", "proxy.compat"),
    ("proxy.request", "proxy.response", "proxy.stats", "proxy.tracecontext"),
    ("proxy.metrics",),
    # settings and records
    ("proxy.accesslog", "proxy.auth", "proxy.events", "proxy.totals"),
    ("proxy.config", "proxy.dashboard"),
    # I/O below the request path
    ("proxy.redis_tier", "proxy.shared", "proxy.ledger", "proxy.fleet", "proxy.keys_admin", "proxy.tls", "proxy.probe",
     "proxy.tracing"),
    ("proxy.upstream",),
    ("proxy.pool",),
    ("proxy.generation", "proxy.response_cache"),
    ("proxy.gateway",),
    ("proxy.exchange",),
    # the request path
    ("proxy.adapt", "proxy.caching", "proxy.admin"),
    ("proxy.pipeline",),
    ("proxy.relay", "proxy.downstream", "proxy.h2"),
    ("proxy.sniff",),
    # the process
    ("proxy.server",),
    ("proxy.workers",),
    ("proxy.cli",),
    ("proxy.__main__",),
]
PURE_LAYERS = 6  # the first six
SUBMODULES: set[str] = set()  # filled below, once the helpers exist
IO_MODULES = {"asyncio", "socket", "ssl", "os", "subprocess", "uvloop", "httptools", "mmap", "redis", "sqlite3"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _all_modules() -> set[str]:
    return {module_name(p) for p in PROXY.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, by full name (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from proxy import pipeline` imports the module proxy.pipeline
                found.add(f"{base}.{alias.name}")
            found.add(base)  # (dropped below when every name was a submodule)
            if all(f"{base}.{alias.name}" in SUBMODULES for alias in node.names):
                found.discard(base)
    return found


def proxy_modules() -> dict[str, set[str]]:
    SUBMODULES.update(_all_modules())
    modules = {module_name(p): imports_of(p) for p in PROXY.rglob("*.py")}
    return {name: {i for i in imported if i in modules and i != name} for name, imported in modules.items()}


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, layer in enumerate(LAYERS):
        for unit in layer:
            if (module == unit or module.startswith(unit + ".")) and len(unit) > best_len:
                if unit == "proxy" and module != "proxy":
                    continue  # the root package names only proxy/__init__.py
                best, best_len = index, len(unit)
    return best


def unit_of(module: str) -> str:
    for layer in LAYERS:
        for unit in layer:
            if unit != "proxy" and (module == unit or module.startswith(unit + ".")):
                return unit
    return module


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in proxy_modules() if layer_of(m) < 0)
    assert not unplaced, f"place these modules in a layer in {__file__}: {unplaced}"


def test_imports_go_down_the_layers() -> None:
    upward = []
    for module, imported in proxy_modules().items():
        for target in imported:
            if unit_of(target) == unit_of(module):
                continue  # inside one package
            if layer_of(target) >= layer_of(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle() -> None:
    graph = proxy_modules()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_pure_layer_does_no_io() -> None:
    offenders = []
    for path in PROXY.rglob("*.py"):
        module = module_name(path)
        if not 0 <= layer_of(module) < PURE_LAYERS:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.partition(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [(node.module or "").partition(".")[0]]
            offenders.extend(f"{module} imports {name}" for name in names if name in IO_MODULES)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                offenders.append(f"{module} calls open()")
    assert not offenders, offenders
