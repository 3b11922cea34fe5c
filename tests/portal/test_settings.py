"""Settings read the environment strictly: a malformed value stops start-up naming it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(env_overrides: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"FEDHAEM_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "portal.settings"})
    env.update(env_overrides)
    code = "import django; django.setup(); from django.conf import settings; " \
           "print(settings.DATABASES['default']['ENGINE'], settings.REDIS_URL, settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)


def test_embedded_defaults(tmp_path):
    out = _load({}, tmp_path)
    assert out.returncode == 0, out.stderr
    engine, redis_url, debug = out.stdout.split()
    assert engine.endswith("sqlite3") and redis_url.startswith("redis://127.0.0.1:") and debug == "False"
    assert (tmp_path / "secrets" / "django_secret_key").exists()  # generated, never committed


@pytest.mark.parametrize("name, value", [
    ("DEBUG", "maybe"), ("DATABASE_URL", "mysql-ish://x"), ("REDIS_URL", "localhost:6379"),
    ("EMBEDDED_REDIS_PORT", "sixty"), ("NODE_HEARTBEAT_TIMEOUT_S", "1"), ("FEDHAEM_ENV", "staging"),
])
def test_malformed_value_names_the_variable(tmp_path, name, value):
    out = _load({name: value}, tmp_path)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and name in out.stderr


def test_secret_key_file_and_production_requirements(tmp_path):
    key = tmp_path / "key"
    key.write_text("k" * 60)
    from fedhaem_kernel.atrest import LocalKeyring

    keyring = tmp_path / "at_rest_keys"
    LocalKeyring.create(keyring)
    ok = _load({"FEDHAEM_ENV": "production", "SECRET_KEY_FILE": str(key), "OIDC_RP_CLIENT_SECRET": "s",
                "RUN_EVENTS_KEY_FILE": str(key), "FEDHAEM_AT_REST_KEYS_FILE": str(keyring)}, tmp_path)
    assert ok.returncode == 0, ok.stderr
    no_at_rest_keys = _load({"FEDHAEM_ENV": "production", "SECRET_KEY_FILE": str(key), "OIDC_RP_CLIENT_SECRET": "s",
                             "RUN_EVENTS_KEY_FILE": str(key)}, tmp_path)
    assert no_at_rest_keys.returncode != 0 and "FEDHAEM_AT_REST_KEYS" in no_at_rest_keys.stderr
    no_events_key = _load({"FEDHAEM_ENV": "production", "SECRET_KEY_FILE": str(key), "OIDC_RP_CLIENT_SECRET": "s",
                           "RUN_EVENTS_KEY_FILE": str(tmp_path / "absent")}, tmp_path)
    assert no_events_key.returncode != 0 and "RUN_EVENTS_KEY_FILE" in no_events_key.stderr
    missing = _load({"FEDHAEM_ENV": "production", "OIDC_RP_CLIENT_SECRET": "s"}, tmp_path)
    assert missing.returncode != 0 and "SECRET_KEY" in missing.stderr
    unreadable = _load({"SECRET_KEY_FILE": str(tmp_path / "nope")}, tmp_path)
    assert unreadable.returncode != 0 and "SECRET_KEY_FILE" in unreadable.stderr
