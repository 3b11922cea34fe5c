"""Everything under var/ is private to the service's own user: the SQLite database (sessions, API
tokens), the development provider's database and keys, secrets, synthetic cohorts, run folders.
Each process entry point sets the umask to 0o077 before it creates anything, and start-up
tightens what an older version (or another tool) left group- or world-readable."""
from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def restrict_umask() -> None:
    """New files 0600, new folders 0700, in this process and every child it starts."""
    os.umask(PRIVATE_UMASK)


def tighten(root: Path) -> None:
    """chmod `root` and everything below it to 0700 (folders) / 0600 (files) where group or
    others have any bit; symlinks and other users' files are left alone."""
    root = Path(root)
    if not root.exists():
        return
    uid = os.geteuid()

    def fix(path: Path, wanted: int) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode) or st.st_uid != uid:
            return
        if st.st_mode & 0o077:
            try:
                os.chmod(path, (st.st_mode & 0o700) | (wanted & 0o700))
            except FileNotFoundError:
                pass

    fix(root, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            fix(Path(dirpath) / name, DIR_MODE)
        for name in filenames:
            fix(Path(dirpath) / name, FILE_MODE)


def private_dir(path: Path) -> Path:
    """mkdir -p with mode 0700 (and tighten it if it already existed)."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tighten(path)
    return path
