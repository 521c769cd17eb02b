"""Imports point one way: cli -> student -> cache -> common, the vendor teacher_service -> common beside the client."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

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
