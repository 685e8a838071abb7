"""Layers import downwards only (DESIGN.md): the import-linter contracts of ``pyproject.toml``
hold, fail on a deliberately wrong import, and the project's modules have no import cycle
beyond the known ones being removed (issue 15).

The floors: ``glimpse`` (ground) <- ``envs`` <- ``agents``, ``soft_baselines`` <-
``glimpse.experiments`` (top) <- ``scripts/``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("glimpse", "envs", "agents", "soft_baselines")

KNOWN_CYCLES: tuple[frozenset[str], ...] = ()
"""Import cycles still allowed, each named with its issue. A new cycle fails the test; a
known one may only shrink. Empty since issue 15's loop landed: keep it so."""


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run from ``cwd`` (its ``pyproject.toml``, its packages)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]),
    }
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contracts_hold() -> None:
    res = lint_imports(REPO)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "0 broken" in out and "2 kept" in out, out


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's packages and ``pyproject.toml``, copied (no bytecode)."""
    root = tmp_path_factory.mktemp("tree")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("path", "line", "named"),
    [
        ("glimpse/retina.py", "import agents", "glimpse.retina -> agents"),
        (
            "glimpse/viz.py",
            "import glimpse.experiments.compare",
            "glimpse.viz -> glimpse.experiments",
        ),
        ("glimpse/data/mnist.py", "import envs.core", "glimpse.data.mnist -> envs.core"),
        ("envs/core.py", "import soft_baselines", "envs.core -> soft_baselines"),
        ("envs/vector.py", "import agents.ram", "envs.vector -> agents.ram"),
        ("soft_baselines/se.py", "import agents", "soft_baselines.se -> agents"),
    ],
)
def test_a_wrong_import_breaks_the_contract(
    tree_copy: Path, path: str, line: str, named: str
) -> None:
    target = tree_copy / path
    original = target.read_text()
    try:
        target.write_text(original + f"\n{line}  # deliberately wrong\n")
        res = lint_imports(tree_copy)
    finally:
        target.write_text(original)
    out = " ".join((res.stdout + res.stderr).split())  # rich wraps long lines
    assert res.returncode != 0, out
    assert "BROKEN" in out and named in out, out


def test_a_new_glimpse_module_must_be_on_a_floor(tree_copy: Path) -> None:
    """The ground floor is listed module by module (a layer cannot contain the top floor
    ``glimpse.experiments``), so an unlisted module would escape: exhaustive fails it."""
    extra = tree_copy / "glimpse" / "unlisted_module.py"
    extra.write_text('"""Not on any floor."""\n')
    try:
        res = lint_imports(tree_copy)
    finally:
        extra.unlink()
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode != 0 and "glimpse.unlisted_module" in out, out


def test_both_contracts_list_the_same_ground_floor() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    layered, floors = contracts["layers"]["layers"], contracts["glimpse-floors"]["layers"]
    assert layered[0] == "glimpse." + floors[0] == "glimpse.experiments"

    def names(layer: str, drop: str = "") -> list[str]:
        return [m.strip().replace(drop, "", 1) for m in layer.split(":")]

    assert names(layered[-1], "glimpse.") == names(floors[1])


def _cycles(graph: grimp.ImportGraph) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(frozenset(comp))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    class Graph:
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m: str) -> set[str]:
            return self.edges.get(m, set())

    assert _cycles(Graph()) == [frozenset({"a", "b", "c"})]  # type: ignore[arg-type]


def test_no_import_cycles_beyond_the_known_ones() -> None:
    """Function-local and ``TYPE_CHECKING`` imports count: a cycle is a piece in the wrong
    room, not something to hide inside a function."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = _cycles(graph)
    new = [sorted(c) for c in cycles if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"new import cycles: {new}"
    for known in KNOWN_CYCLES:
        if not any(c <= known for c in cycles):
            warnings.warn(f"KNOWN_CYCLES entry {sorted(known)} is gone: remove it", stacklevel=1)


def _local_project_imports(path: Path) -> list[str]:
    """``module:line`` of imports of the project's packages inside functions of ``path``."""
    tree = ast.parse(path.read_text())
    hits = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            if any(n.split(".")[0] in PACKAGES for n in names):
                hits.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return hits


def test_the_top_floor_imports_at_module_level() -> None:
    """No function-local imports of the project's packages in the top floor and the
    playback path (they used to dodge cycles there)."""
    files = sorted((REPO / "glimpse" / "experiments").glob("*.py"))
    files += [REPO / "agents" / "playback.py", REPO / "glimpse" / "viz.py"]
    hits = [h for f in files for h in _local_project_imports(f)]
    assert not hits, hits
