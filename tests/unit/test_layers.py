"""The package layers: a module imports only from its own layer or the ones below it.

Read from the source with ``ast`` (imports inside functions and under ``TYPE_CHECKING``
count too), so a lazy import cannot hide a dependency that reaches up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exdd"
# Lowest first. A module belongs to the first entry that is a prefix of its name. The
# detector's settings types are pure data that the config hub reads: they sit at the base.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("exdd.errors", "exdd.fsutil", "exdd.runtime", "exdd.storage", "exdd.config",
     "exdd.detector.settings"),
    ("exdd.data",),
    ("exdd.detector",),
    ("exdd.evaluation", "exdd.inference"),
    ("exdd.line",),
    ("exdd.pipeline",),
    ("exdd.serving", "exdd.cli", "exdd.__main__"),
)


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    if module == "exdd":
        return 0
    raise AssertionError(f"{module}: in no layer of tests/unit/test_layers.py")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def imported(path: Path, name: str) -> set[str]:
    """exdd modules that ``path`` imports (``from exdd.x import y`` names exdd.x, or
    exdd.x.y when that is a module)."""
    names: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names
                         if (PACKAGE.parent / f"{base}.{a.name}".replace(".", "/")).exists()
                         or (PACKAGE.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")
                             ).exists())
    return {n for n in names if n == "exdd" or n.startswith("exdd.")}


@pytest.mark.parametrize("name,path", modules(), ids=[m for m, _ in modules()])
def test_nothing_reaches_up(name: str, path: Path) -> None:
    own = layer_of(name)
    above = sorted(m for m in imported(path, name) if m != "exdd" and layer_of(m) > own)
    assert not above, f"{name} (layer {own}) imports from higher layers: {above}"


def test_every_layer_is_a_folder() -> None:
    """What `ls exdd/` shows is the layer picture: packages, plus the base modules."""
    top = {p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders == {"data", "detector", "evaluation", "inference", "line", "pipeline",
                       "serving", "cli"}
    assert top - folders == {f"{m.split('.')[1]}.py" for m in LAYERS[0] if m.count(".") == 1}


def test_no_import_cycles() -> None:
    """No two modules need each other, not even through a lazy import."""
    known = {name for name, _ in modules()}
    graph = {name: {m for m in imported(path, name) if m in known and m != name}
             for name, path in modules()}
    for name in graph:  # a package's __init__ re-exports its modules: not a cycle
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(trail + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + (nxt,)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def test_command_modules_share_only_cli_common() -> None:
    """A sub-command module imports no other sub-command module: what they share is in
    ``exdd.cli.common``."""
    commands = [(name, path) for name, path in modules()
                if name.startswith("exdd.cli.") and name != "exdd.cli.common"]
    for name, path in commands:
        others = sorted(m for m in imported(path, name) if m.startswith("exdd.cli.")
                        and m not in ("exdd.cli.common", name))
        assert not others, f"{name} imports other command modules: {others}"
