"""Imports point one way: cli -> student -> cache -> common, the vendor teacher_service -> common beside the client."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from .conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest brings tomli where the standard library has no tomllib
    import tomli as tomllib

# What each package may import of the project's own packages (its own modules always).
ALLOWED = {
    "common": set(),
    "teacher_service": {"common"},
    "cache": {"common"},
    "student": {"cache", "common"},
    "cli": {"student", "cache", "common", "teacher_service"},
}


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports, at any depth of its code (lazy imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


def test_every_module_imports_only_the_packages_beneath_it():
    wrong = []
    for package, allowed in ALLOWED.items():
        modules = sorted((REPO / package).rglob("*.py"))
        assert modules, package
        for module in modules:
            for imported in imported_packages(module) - allowed - {package}:
                wrong.append(f"{module.relative_to(REPO)} imports {imported}")
    assert not wrong, "imports that point the wrong way:\n" + "\n".join(wrong)


def test_the_check_sees_a_lazy_import_that_points_the_wrong_way(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from teacher_service.local import local_vendor\n    import student.run\n")
    assert imported_packages(module) == {"teacher_service", "student"}


def test_every_data_file_inside_a_package_ships_with_it():
    """A file the product reads at run time (the demo teacher, model configs, the demo's measured seeds) is package
    data in pyproject.toml, so a wheel or a non-editable install carries it; the tests run from the source tree and
    would not notice one left out."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    unshipped = []
    for package, patterns in data.items():
        folder = REPO / package
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc"):
                inside = path.relative_to(folder)
                if not any(_shipped(inside, pattern) for pattern in patterns):
                    unshipped.append(str(path.relative_to(REPO)))
    assert set(data) == {"common", "teacher_service", "cache", "student", "cli"}
    assert unshipped == []


def _shipped(inside: Path, pattern: str) -> bool:
    """Whether setuptools' package-data `pattern` (a glob relative to the package, no `**`) takes `inside`."""
    return inside.match(pattern) and len(inside.parts) == len(Path(pattern).parts)
