import ast
from pathlib import Path

FORBIDDEN = {"portal", "django", "rest_framework", "channels", "celery"}
PKG = Path(__file__).resolve().parents[2] / "generative"


def test_generative_never_imports_the_web_stack():
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN, f"{path.name} imports {n}"


def test_third_party_generators_stay_in_their_backend():
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        if "import sdv" in text or "from sdv" in text:
            assert path.name == "sdv_ctgan.py", path
        if "from pgmpy" in text or "import pgmpy" in text:
            assert path.name == "bayesnet.py", path
