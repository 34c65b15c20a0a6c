"""The project's own files import one way, from the scripts down to the model and the helpers: the graph of their
imports (module level and inside functions alike) has no cycle. `python tests/test_imports.py` prints it."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_graph() -> dict:
    """{module: the project's modules it imports}, for every .py file of the project but the tests."""
    files = {p.stem: p for p in [*ROOT.glob("*.py"), *(ROOT / "data").glob("*.py")]}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        graph[name] = sorted(found & set(files) - {name})
    return graph


def cycle(graph: dict) -> list | None:
    """A cycle of the graph (a list of modules, the first repeated last), or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None
    return next((found for node in graph if node not in state and (found := visit(node))), None)


def test_the_imports_have_no_cycle():
    graph = import_graph()
    assert cycle(graph) is None, " -> ".join(cycle(graph))
    assert cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]  # (the check itself finds one)


if __name__ == "__main__":
    graph = import_graph()
    for name, imports in sorted(graph.items()):
        print(f"{name}: {', '.join(imports)}")
    print(f"{sum(map(len, graph.values()))} edges between {len(graph)} files; cycle: {cycle(graph)}")
    sys.exit(cycle(graph) is not None)
