"""The package's shape: stages import one way (no circle, deferred imports included), and no module or
sub-package grows past the size a reader can hold."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "weight_tuner"
MAX_MODULE_LINES = 400
MAX_SHARE = 0.25  # of the package's lines, for any one sub-package
MAX_FUNCTION_LINES = 60
MAX_POSITIONAL = 7  # parameters a caller may pass by position (self and cls not counted)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(unresolved: list | None = None) -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, wherever in the file; relative
    imports that name no module of the package are appended to ``unresolved``."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import formats` imports a module
                    if f"{target}.{alias.name}" in modules:
                        edges.add(f"{target}.{alias.name}")
                if target in modules:
                    edges.add(target)
                elif node.level and unresolved is not None:
                    unresolved.append(f"{name}: from {'.' * node.level}{node.module or ''}")
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
        edges.discard(name)
        graph[name] = {e for e in edges if not name.startswith(e + ".") and e != "weight_tuner"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a list of modules, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_among_the_package_modules():
    graph = import_graph()
    assert graph["weight_tuner.confirm.confirmation"] >= {"weight_tuner.confirm.plan", "weight_tuner.storage"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_every_relative_import_names_a_module_of_the_package():
    unresolved = []
    import_graph(unresolved)
    assert not unresolved


def stated_layers() -> dict[str, int]:
    """Each module (or sub-package) of docs/architecture.md's stage table and its row: a module may import only
    its own row and the rows above it."""
    import re

    table = (PACKAGE.parent / "docs" / "architecture.md").read_text().split("## Where state lives")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| stage", "| ---"))]
    layers = {}
    for row, line in enumerate(rows):
        for name in re.findall(r"`([^`]+)`", line.split("|")[2]):
            if name.endswith((".py", "/")):
                layers["weight_tuner." + name.removesuffix(".py").removesuffix("/").replace("/", ".")] = row
    return layers


def test_every_import_keeps_the_layer_order_the_architecture_states():
    """Issue 47, 6: the order was stated, not checked (formats.py imported config, a row below it)."""
    layers = stated_layers()

    def layer(module):
        while module not in layers and "." in module:
            module = module.rsplit(".", 1)[0]
        return layers.get(module)

    graph = import_graph()
    unplaced = sorted(m for m in graph if m != "weight_tuner" and layer(m) is None)
    assert not unplaced, f"modules the stage table does not place: {unplaced}"
    upward = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
              if m != "weight_tuner" and layer(d) > layer(m)]
    assert not upward, f"imports of a later stage: {upward}"
    assert layer("weight_tuner.errors") == 0 and layer("weight_tuner.cli") == max(layers.values())


def test_no_module_or_sub_package_is_too_big():
    lines = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    total = sum(lines.values())
    too_long = {str(p.relative_to(PACKAGE)): n for p, n in lines.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    for sub in (d for d in PACKAGE.iterdir() if (d / "__init__.py").exists()):
        share = sum(n for p, n in lines.items() if sub in p.parents) / total
        assert share <= MAX_SHARE, f"{sub.name}/ holds {share:.0%} of the package's lines"


def long_or_wide_functions(source: str) -> list[str]:
    """Functions of ``source`` over :data:`MAX_FUNCTION_LINES` lines or with more than :data:`MAX_POSITIONAL`
    positional parameters."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            if lines > MAX_FUNCTION_LINES or len(positional) > MAX_POSITIONAL:
                out.append(f"{node.name} ({lines} lines, {len(positional)} positional)")
    return out


def test_no_function_is_too_long_or_takes_too_many_positional_parameters():
    """Issue 47, 4: a reader holds a function on one screen, and a caller names what it passes beyond a few."""
    planted = "def f(a, b, c, d, e, f, g, h):\n    pass\n\ndef g(a, *, b, c, d, e, f, g, h):\n" + "    x = 1\n" * 60
    assert long_or_wide_functions(planted) == ["f (2 lines, 8 positional)", "g (61 lines, 1 positional)"]
    found = {str(p.relative_to(PACKAGE)): long_or_wide_functions(p.read_text()) for p in PACKAGE.rglob("*.py")}
    assert not {k: v for k, v in found.items() if v}


def test_light_commands_never_import_tensorflow(tmp_path):
    """`--help`, `corpus` and `export` stay quick (TensorFlow and Keras take seconds to import) only because
    their heavy imports sit inside functions: run them in one fresh process and look at what it imported."""
    import json
    import subprocess
    import sys

    from support import exportable_study

    url = f"sqlite:///{tmp_path}/e.db"
    exportable_study(url)
    script = (
        "import contextlib, io, json, sys\n"
        "from weight_tuner.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    for argv in (['--help'], ['corpus', '--help'], ['corpus', '--sample-docs', '12'],\n"
        f"                 ['export', '--study', 'e', '--storage', {url!r}, '-o', {str(tmp_path / 'e.json')!r}]):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stdout[-2000:]
    assert (tmp_path / "e.json").exists()  # export did run
