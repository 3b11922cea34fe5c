"""The node's FAB check (fl_engine.deploy.fab_pin): only FedHaem's installed ClientApp runs."""
from __future__ import annotations

import io
import zipfile

import pytest

from fl_engine.deploy.fab_pin import PINNED_CLIENTAPP, FabRefused, check_fab
from fl_engine.deploy.local import APP_DIR

TOML = (APP_DIR / "pyproject.toml").read_text()


def _fab(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_fedhaem_s_own_fab_passes():
    check_fab(_fab({"pyproject.toml": TOML, "README.md": "x", ".info/CONTENT": "x"}))


@pytest.mark.parametrize("files, words", [
    ({"pyproject.toml": TOML.replace(PINNED_CLIENTAPP, "peek:app"), "peek.py": ""}, "carries code"),
    ({"pyproject.toml": TOML.replace(PINNED_CLIENTAPP, "peek:app")}, "names ClientApp 'peek:app'"),
    ({"pyproject.toml": TOML, "fl_engine/federation/client_app.py": ""}, "carries code"),  # a shadow module
    ({"pyproject.toml": TOML, "sitecustomize.pth": ""}, "carries code"),
    ({"README.md": ""}, "no pyproject.toml"),
    ({"pyproject.toml": "[tool.flwr"}, "unreadable"),
])
def test_a_fab_that_would_run_other_code_is_refused(files, words):
    with pytest.raises(FabRefused, match=words):
        check_fab(_fab(files))


def test_not_a_zip_is_refused():
    with pytest.raises(FabRefused, match="not a zip"):
        check_fab(b"hello")
