"""The dependency rule: the pure packages never import the web stack."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {"portal", "django", "rest_framework", "channels", "celery"}
PURE = ["fedhaem_kernel", "fl_engine", "etl", "generative"]


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_do_not_import_the_web_stack(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package} has no Python files"
    bad = [f"{p.relative_to(REPO)}:{line}: {name}" for p in files for line, name in _imports(p)
           if name.split(".")[0] in FORBIDDEN]
    assert not bad, "pure package imports the web stack:\n" + "\n".join(bad)


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom django.conf import settings\n")
    assert [n for _, n in _imports(bad) if n.split(".")[0] in FORBIDDEN] == ["django.conf"]
