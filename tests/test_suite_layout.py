"""The suite stands alone: test modules share code only through tests/support, fixtures reach
them through `pytest_plugins` (never imported by name), and every folder of tests is a
package, so `pytest` and `python -m pytest` collect the same tree."""

import ast
from pathlib import Path

from tests.support.paths import TESTS

SUPPORT = TESTS / "support"
DATA = {"data", "fakes"}  # folders of files that tests read or run, not import


def _modules(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*.py") if not DATA.intersection(p.relative_to(TESTS).parts)
    )


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in path; a relative module keeps its dots."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
        isinstance(target, ast.Name) and target.id == "fixture"
    )


def _fixtures(path: Path) -> set[str]:
    """The functions of path that are pytest fixtures, by function name and fixture name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in filter(_is_fixture, node.decorator_list):
                names.add(node.name)
                for keyword in getattr(decorator, "keywords", []):
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        names.add(keyword.value.value)
    return names


def test_no_test_module_imports_another_test_module_or_a_fixture() -> None:
    fixtures = {p.stem: _fixtures(p) for p in SUPPORT.glob("*.py")}
    wrong = []
    for path in _modules(TESTS):
        where = path.relative_to(TESTS.parent)
        for line, module, names in _imports(path):
            last = module.rpartition(".")[2]
            imported = [n for n in names if n.startswith("test_") or n == "conftest"]
            if last.startswith("test_") or last == "conftest" or imported:
                wrong.append(f"{where}:{line}: imports {module} (a test module or conftest)")
            if module.startswith("tests.support."):
                used = fixtures.get(last, set()).intersection(names)
                if used:
                    wrong.append(f"{where}:{line}: imports fixture(s) {sorted(used)} by name")
    assert not wrong, "share code through tests/support, fixtures through pytest_plugins:\n" + (
        "\n".join(wrong)
    )


def test_every_folder_of_tests_is_a_package() -> None:
    folders = {p.parent for p in _modules(TESTS)}
    missing = sorted(
        str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").exists()
    )
    assert not missing, (
        f"add __init__.py to {missing}: without it `pytest` imports them as top-level"
    )


def test_plugins_named_in_conftest_are_support_modules_with_fixtures() -> None:
    """What pytest_plugins names exists (pytest would fail late) and holds fixtures."""
    tree = ast.parse((TESTS / "conftest.py").read_text())
    (plugins,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "pytest_plugins"
    ]
    for plugin in plugins:
        path = TESTS.parent / (plugin.replace(".", "/") + ".py")
        assert path.parent == SUPPORT and _fixtures(path), plugin
