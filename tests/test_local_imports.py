"""No silent function-local imports of in-repo modules: an import of fedhaem_kernel, etl,
generative, fl_engine or portal inside a function or method belongs at the module's top, unless a
comment on its line says why it cannot be there (an import cycle, Django's app registry, a heavy
or optional dependency such as torch, MLflow or sdv)."""
import ast
import io
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("fedhaem_kernel", "etl", "generative", "fl_engine", "portal")

def _in_repo(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    return any(alias.name.split(".")[0] in PACKAGES for alias in node.names)


def _local_imports(tree: ast.AST):
    """In-repo Import / ImportFrom nodes anywhere inside a function (methods, nested functions)."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _in_repo(node):
                    yield node


def uncommented_local_imports(source: str) -> list[int]:
    """Line numbers of function-local in-repo imports with no comment on any of their lines."""
    commented = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                 if tok.type == tokenize.COMMENT}
    lines = {node.lineno for node in _local_imports(ast.parse(source))
             if not commented & set(range(node.lineno, (node.end_lineno or node.lineno) + 1))}
    return sorted(lines)


def _files():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if "/migrations/" not in rel:
                yield rel, path


def test_function_local_in_repo_imports_say_why():
    files = list(_files())
    assert len(files) > 50, "the walk found too few files: is REPO right?"
    bad = [f"{rel}:{line}" for rel, path in files
           for line in uncommented_local_imports(path.read_text(encoding="utf-8"))]
    assert not bad, ("function-local imports of in-repo modules without a reason: move each to the "
                     "module's top, or say on its line why it must stay local "
                     "(# cycle: ..., # Django: ..., # torch: ...):\n" + "\n".join(bad))


def test_the_check_catches_a_silent_local_import_and_accepts_a_reason():
    source = (
        "import os\n"
        "from portal.audit.services import record\n"  # module level: fine
        "\n"
        "def f():\n"
        "    import json\n"  # third-party / stdlib: fine
        "    from portal.studies import lifecycle\n"  # silent: reported
        "    from fl_engine.serving import SurvivalPyfunc  # mlflow: heavy\n"
        "    from . import sibling\n"  # relative, silent: reported
        "\n"
        "class C:\n"
        "    def m(self):\n"
        "        def inner():\n"
        "            import generative.safe\n"  # nested in a method: reported
        "        from etl import (\n"
        "            cli,  # cycle: etl.cli imports this module\n"
        "        )\n"
    )
    assert uncommented_local_imports(source) == [6, 8, 13]
