"""Encryption at rest in the portal (fedhaem_kernel.atrest): the keyring the settings name, a
Django storage that encrypts what it saves and decrypts what it opens (synthetic cohorts), and
file helpers for the run folders. Which files are covered: SECURITY.md, "Encryption at rest".

settings.AT_REST_ENCRYPTION switches it; with it off new files are written in plaintext, and files
already encrypted are still read (their keys are still needed)."""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.core.signals import setting_changed
from django.dispatch import receiver

from fedhaem_kernel import atrest

log = logging.getLogger(__name__)


def enabled() -> bool:
    return bool(getattr(settings, "AT_REST_ENCRYPTION", False))


def keyring() -> atrest.LocalKeyring:
    """The KEKs: FEDHAEM_AT_REST_KEYS (a JSON keyring in the environment, read-only) or the key
    file FEDHAEM_AT_REST_KEYS_FILE (default var/secrets/at_rest_keys.json, made at first start).
    A key file is read again when it changes, so a rotation run by another process (a new
    current key, a retired one) is seen at once by a running portal and its workers."""
    inline = getattr(settings, "AT_REST_KEYS", None)
    if inline:
        return _load(inline, None)
    path = Path(settings.AT_REST_KEYS_FILE)
    try:
        st = path.stat()
    except OSError as exc:
        raise ImproperlyConfigured(f"key file {path} cannot be read: {exc}") from None
    return _load(None, (str(path), st.st_mtime_ns, st.st_size, st.st_ino))


@lru_cache(maxsize=4)
def _load(inline: str | None, file_state: tuple | None) -> atrest.LocalKeyring:
    try:
        if inline:
            return atrest.LocalKeyring.from_json(inline, "FEDHAEM_AT_REST_KEYS")
        return atrest.LocalKeyring.from_file(file_state[0])
    except atrest.KeyringError as exc:
        raise ImproperlyConfigured(str(exc)) from None


keyring.cache_clear = _load.cache_clear  # type: ignore[attr-defined]


@receiver(setting_changed)
def _forget_keyring(setting, **kwargs):
    if setting in {"AT_REST_KEYS", "AT_REST_KEYS_FILE", "AT_REST_ENCRYPTION"}:
        keyring.cache_clear()


def managed_roots(mlflow: bool = True) -> list[Path]:
    """Folders whose files the portal keeps encrypted: media (synthetic cohorts), run folders
    and (`mlflow`) the local MLflow artifact store. The migrate path leaves MLflow's out: its
    older experiments are read by MLflow through their plaintext `file:` location."""
    roots = [Path(settings.MEDIA_ROOT), Path(settings.VAR_DIR) / "runs"]
    art = settings.MLFLOW_ARTIFACT_ROOT
    if mlflow and ("://" not in art or art.startswith("file:")):
        roots.append(Path(art.removeprefix("file://")))
    return roots


# --- run folders ------------------------------------------------------------------------------

def write_file(path: str | Path, data: bytes) -> None:
    """Write `data` to `path`: encrypted (atomically) when at-rest encryption is on."""
    if enabled():
        atrest.write_bytes(path, data, keyring())
    else:
        Path(path).write_bytes(data)


def read_file(path: str | Path) -> bytes:
    """The plaintext of `path`: decrypted when it is encrypted; a plaintext file is read only
    when encryption is off (else NotEncrypted names it and the migrate command)."""
    if atrest.is_encrypted(path) or enabled():
        return atrest.read_bytes(path, keyring())
    return Path(path).read_bytes()


def open_file(path: str | Path):
    """`path` opened for reading its plaintext (streaming), as read_file decides."""
    if atrest.is_encrypted(path) or enabled():
        return atrest.open_encrypted(path, keyring())
    return open(path, "rb")


# --- the storage ------------------------------------------------------------------------------

class _PlaintextFile(File):
    """The plaintext view of a stored file; reopening it (FieldFile.open after close) decrypts
    again instead of Django's plain open() of the path."""

    def __init__(self, path: str, name: str):
        self._path = path
        super().__init__(open_file(path), name)

    def open(self, mode=None, *args, **kwargs):
        if not self.closed:
            self.seek(0)
        else:
            self.file = open_file(self._path)
        return self


class EncryptedFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose files are encrypted at rest: save() streams the content through the
    kernel's encrypting writer (temporary file, atomic rename), open() returns a seekable
    plaintext reader (downloads stream chunk by chunk; Content-Length is the plaintext size)."""

    def _save(self, name, content):
        full = self.path(name)
        directory = os.path.dirname(full)
        os.makedirs(directory, mode=self.directory_permissions_mode or 0o700, exist_ok=True)
        while True:  # reserve the name (O_EXCL) as FileSystemStorage does, then replace it atomically
            try:
                fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                name = self.get_available_name(name)
                full = self.path(name)
                continue
            os.close(fd)
            break
        try:
            if enabled():
                with atrest.EncryptingWriter(full, keyring()) as out:
                    for chunk in content.chunks():
                        out.write(chunk)
            else:
                with open(full, "wb") as out:
                    for chunk in content.chunks():
                        out.write(chunk)
        except BaseException:
            Path(full).unlink(missing_ok=True)
            raise
        if self.file_permissions_mode is not None:
            os.chmod(full, self.file_permissions_mode)
        return str(name).replace("\\", "/")

    def _open(self, name, mode="rb"):
        if "r" not in mode or "+" in mode:
            raise ValueError(f"{name}: encrypted storage opens files for reading only (mode {mode!r})")
        return _PlaintextFile(self.path(name), name)

    def size(self, name):
        path = self.path(name)
        if atrest.is_encrypted(path):
            with atrest.DecryptingReader(path, keyring()) as r:
                return r.size
        return super().size(name)


# --- rotation and migration (the management commands call these) -------------------------------

def rotate_keys(*, new_key: bool = False, retire: str | None = None, progress=None) -> dict:
    """Re-wrap every encrypted file the portal keeps to the current KEK (`new_key`: first add a
    fresh KEK to the key file and make it current), then (`retire`) drop an old KEK once no file
    is under it. Safe to interrupt and run again. Returns the counts and the KEK census."""
    ring = keyring()
    out: dict = {"previous_key": ring.current_key_id}
    if new_key:
        out["new_key"] = ring.add_key()
        keyring.cache_clear()
        ring = keyring()
    rep = atrest.rotate(managed_roots(), ring, progress)
    out.update(rep.as_dict(), current_key=ring.current_key_id)
    if retire:
        if rep.errors:
            raise atrest.KeyringError(f"not retiring {retire!r}: {len(rep.errors)} file(s) could not be "
                                      "re-wrapped (see errors)")
        if rep.key_ids.get(retire):
            raise atrest.KeyringError(f"not retiring {retire!r}: {rep.key_ids[retire]} file(s) are still "
                                      "under it")
        ring.retire(retire)
        keyring.cache_clear()
        out["retired"] = retire
    return out


def migrate_plaintext(*, apply: bool, progress=None) -> dict:
    """The migrate path for files written before encryption was on: encrypt in place every
    plaintext file under media and the run folders (`apply`), or only count them. MLflow's
    artifact store is counted, not changed (see portal.core.mlflow_at_rest)."""
    if not enabled():
        raise ImproperlyConfigured("FEDHAEM_AT_REST_ENCRYPTION is off: switch it on before migrating")
    roots = managed_roots(mlflow=False)
    out: dict = {"roots": [str(r) for r in roots]}
    if apply:
        out.update(atrest.migrate(roots, keyring(), progress).as_dict())
    out["census"] = atrest.census(roots)
    mlflow_only = [r for r in managed_roots() if r not in roots]
    out["mlflow_census"] = atrest.census(mlflow_only)
    return out
