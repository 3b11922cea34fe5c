"""Files under var/ are 0600 and folders 0700, whatever umask the process was started with:
the SQLite database, secrets, the development provider's database and keys, synthetic cohorts,
and anything an older version left readable."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _loose_umask():
    os.umask(0o022)  # what a shell usually gives: files 0644 unless the process says otherwise


def _run(args, var: Path, settings="portal.settings", **env):
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ.update({"FEDHAEM_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": settings, **env})
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=environ, preexec_fn=_loose_umask,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _all_private(var: Path):
    loose = [f"{p} {oct(_mode(p))}" for p in [var, *var.rglob("*")]
             if not p.is_symlink() and _mode(p) & 0o077]
    assert not loose, loose


def test_portal_start_creates_private_files_and_tightens_old_ones(tmp_path):
    var = tmp_path / "var"
    (var / "runs" / "old-run").mkdir(parents=True)
    old = var / "runs" / "old-run" / "metrics.json"
    old.write_text("{}")
    os.chmod(var, 0o755)
    os.chmod(var / "runs", 0o755)
    os.chmod(old, 0o644)
    _run(["manage.py", "migrate", "-v0"], var)
    db = var / "fedhaem.sqlite3"
    assert db.exists() and _mode(db) == 0o600
    assert _mode(var / "secrets" / "django_secret_key") == 0o600
    assert _mode(old) == 0o600 and _mode(var / "runs") == 0o700 and _mode(var) == 0o700
    _all_private(var)


def test_dev_identity_provider_database_and_keys_are_private(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    _run(["-m", "django", "migrate", "-v0"], var, settings="portal.devidp.settings")
    idp = var / "devidp"
    assert _mode(idp) == 0o700
    assert _mode(idp / "idp.sqlite3") == 0o600 and _mode(idp / "oidc_rsa.pem") == 0o600
    _all_private(idp)


def test_stored_synthetic_cohort_file_is_private(db, settings, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import FileSystemStorage

    # The storage a cohort's FileField uses, under a fresh folder (the setting, not the umask).
    storage = FileSystemStorage(location=tmp_path / "media")
    old = os.umask(0o022)
    try:
        name = storage.save("synthetic/run-1-ctgan.csv", ContentFile(b"age,hb\n70,9.5\n"))
    finally:
        os.umask(old)
    path = Path(storage.path(name))
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700


@pytest.mark.parametrize("module, settings", [("portal.celery", "portal.settings"),
                                              ("portal.asgi", "portal.settings"),
                                              ("portal.devidp.asgi", "portal.devidp.settings")])
def test_every_entry_point_sets_the_private_umask(tmp_path, module, settings):
    out = tmp_path / "umask.txt"
    code = f"import importlib, os; importlib.import_module({module!r}); open({str(out)!r}, 'w').write(oct(os.umask(0)))"
    _run(["-c", code], tmp_path / "var", settings=settings)
    assert out.read_text() == "0o77"
