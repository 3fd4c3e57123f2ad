"""The code's shape, read from its syntax trees: no import cycles, no re-exports, no private names
imported across modules, and size limits a reader can hold in mind."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = (("src/emprl", "emprl"), ("reward_models", "reward_models"))
# What the reward package may use of emprl: the shared library and the data readers, no stage.
REWARD_MAY_IMPORT = ("emprl.common", "emprl.data")
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 400, 150, 80


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for both packages."""
    found = {}
    for root, prefix in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, root)):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), os.path.join(ROOT, root))[:-3]
                    dotted = ".".join([prefix, *rel.split(os.sep)])
                    found[dotted.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


MODULES = _modules()


def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as fh:
        return ast.parse(fh.read())


def _imports(path: str, module: str):
    """(target module, imported name or None, line) for every import in the file, wherever it sits
    (inside functions and under TYPE_CHECKING too: a cycle there is still a cycle for a reader)."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level] if not path.endswith("__init__.py") else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:  # `from package import module`
                    yield f"{base}.{alias.name}", None, node.lineno
                else:
                    yield base, alias.name, node.lineno


def _owner(target: str) -> str | None:
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in _imports(path, module):
            owner = _owner(target)
            if owner and owner != module and not module.startswith(owner + "."):  # a package's own __init__
                graph[module].add(owner)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _defined_names(path: str) -> set[str]:
    """Names a module defines itself (functions, classes, assignments), not the ones it imports."""
    names = set()
    for node in _tree(path).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):  # conditional definitions
            names.update(_defined_in(node))
    return names


def _defined_in(node) -> set[str]:
    names = set()
    for child in ast.walk(node):
        if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
            names.add(child.name)
        elif isinstance(child, ast.Assign):
            names.update(n.id for t in child.targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _importing_files():
    yield from MODULES.items()
    for folder in ("tests", "tools"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                yield f"{folder}.{name[:-3]}", os.path.join(ROOT, folder, name)


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_reward_package_imports_no_stage():
    graph = _graph()
    used = {t for m in MODULES if m.startswith("reward_models") for t in graph[m] if t.startswith("emprl")}
    assert {t for t in used if not t.startswith(REWARD_MAY_IMPORT)} == set()


def test_no_private_name_is_imported_from_another_module():
    found = [f"{os.path.relpath(path, ROOT)}:{line}: {target}.{name}"
             for module, path in _importing_files() for target, name, line in _imports(path, module)
             if name and name.startswith("_") and _owner(target) and _owner(target) != module]
    assert found == []


def _package_api(path: str) -> set[str]:
    """The names a package's ``__init__`` declares public in ``__all__`` (its API, e.g. reward_models)."""
    for node in _tree(path).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {e.value for e in node.value.elts}
    return set()


def test_every_imported_name_lives_where_it_is_imported_from():
    """No re-exports: a name is imported from the module that defines it, or from a package whose
    ``__init__`` declares it public (``__all__``)."""
    importable = {m: _defined_names(p) | _package_api(p) for m, p in MODULES.items()}
    found = []
    for module, path in _importing_files():
        for target, name, line in _imports(path, module):
            if name and target in MODULES and name != "*" and name not in importable[target]:
                found.append(f"{os.path.relpath(path, ROOT)}:{line}: {name} from {target}")
    assert found == []


def test_every_public_name_of_a_package_is_used():
    """A package API name that nothing imports is a leftover."""
    imported = {(target, name) for module, path in _importing_files() for target, name, _ in _imports(path, module)}
    unused = [f"{m}.{name}" for m, p in MODULES.items() if p.endswith("__init__.py")
              for name in sorted(_package_api(p)) if (m, name) not in imported]
    assert unused == []


@pytest.mark.parametrize("root", [r for r, _ in PACKAGES])
def test_size_limits(root):
    found = []
    for module, path in MODULES.items():
        if not path.startswith(os.path.join(ROOT, root)):
            continue
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().count("\n")
        if lines > MAX_MODULE:
            found.append(f"{module}: {lines} lines")
        for node in ast.walk(_tree(path)):
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else \
                MAX_FUNCTION if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit and node.end_lineno - node.lineno + 1 > limit:
                found.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert found == []
