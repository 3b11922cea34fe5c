"""Start, seed and stop the development identity provider as its own process (demo and tests)."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

CLIENT_ID = "fedhaem-portal"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevIdentityProvider:
    """One provider process on 127.0.0.1:`port`, its state under `var_dir`/devidp."""

    def __init__(self, var_dir: Path, port: int):
        self.var_dir = Path(var_dir)
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.log_path = self.var_dir / "logs" / f"devidp-{port}.log"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/o"

    @property
    def password_file(self) -> Path:
        path = self.var_dir / "secrets" / "demo_password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        return path

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def oidc_settings(self) -> dict:
        """The portal settings that point at this provider."""
        return {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.issuer}/authorize/",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.issuer}/token/",
            "OIDC_OP_USER_ENDPOINT": f"{self.issuer}/userinfo/",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.issuer}/.well-known/jwks.json",
            "OIDC_OP_LOGOUT_ENDPOINT": f"{self.issuer}/logout/",
        }

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update({"DJANGO_SETTINGS_MODULE": "portal.devidp.settings", "DEV_IDP_PORT": str(self.port),
                    "FEDHAEM_VAR_DIR": str(self.var_dir)})
        return env

    def _django(self, *args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "django", *args], env=self._env(),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"development identity provider: `django {' '.join(args)}` failed:\n"
                               f"{result.stderr[-2000:]}")

    def setup(self, client_secret_file: Path, redirect_uris: list[str], post_logout_uris: list[str] = ()) -> None:
        self._django("migrate", "-v0")
        args = ["devidp_setup", "--client-id", CLIENT_ID, "--client-secret-file", str(client_secret_file),
                "--password-file", str(self.password_file)]
        for uri in redirect_uris:
            args += ["--redirect-uri", uri]
        for uri in post_logout_uris:
            args += ["--post-logout-uri", uri]
        self._django(*args)

    def start(self, timeout: float = 30.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "portal.devidp.asgi:application"],
            env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"development identity provider exited; see {self.log_path}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"development identity provider did not listen on {self.port}; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
