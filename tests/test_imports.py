"""The shape of the house: no import cycles among cirbench's and the built-in methods' modules, the
leaf modules stay leaves, and CLI commands never import the app that adds them."""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"cirbench": REPO / "cirbench", "cirbench_methods": REPO / "methods"}


def module_files() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    out = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> List[ast.AST]:
    """Every import statement, at any depth (function-level ones too), except under ``if TYPE_CHECKING:``."""
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the modules of the two packages it imports (a ``from X import y`` whose ``y`` is a
    submodule points at ``X.y``)."""
    files = module_files()
    graph: Dict[str, Set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(module, is_package, node)
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source
                           for alias in node.names]
            edges.update(t for t in targets if t in files and t != module)
        graph[module] = edges
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as a list of modules (first == last), or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_packages_and_their_imports():
    graph = import_graph()
    assert {"cirbench.runner", "cirbench.cli.app", "cirbench.types", "cirbench_methods.spn",
            "cirbench_methods.dqe_cir.attributes"} <= set(graph)
    assert {"cirbench.runs", "cirbench.training", "cirbench.backbones"} <= graph["cirbench.runner"]
    assert "cirbench_methods.combiner" in graph["cirbench_methods.clip4cir"]
    assert "cirbench.runner" in graph["cirbench.cli.run"]  # function-level imports count too


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_leaves_import_nothing_of_cirbench_and_commands_never_import_the_app():
    graph = import_graph()
    for leaf in ("cirbench.types", "cirbench.errors", "cirbench.paths"):
        assert graph[leaf] == set(), f"{leaf} should be a leaf, imports {graph[leaf]}"
    for module, edges in graph.items():
        if module.startswith("cirbench.cli.") and module != "cirbench.cli.app":
            assert "cirbench.cli.app" not in edges, f"{module} imports the app"
    assert not any(m.startswith("cirbench_methods") for m in set().union(*(
        edges for module, edges in graph.items() if module.startswith("cirbench."))))
