"""A hospital node home with one profile per manager it belongs to (docs/multi-manager.md).

A hospital may serve several managers (an oncological one for MDS/AML/CMML/MM, a
non-oncological one for sickle cell disease). Each manager gets a *profile*: its own SuperNode
key pair, manager URL, SuperLink address, node token, TLS root, approvals store and dataset
registry. Nothing is shared between profiles: a dataset registered in profile A's registry is
neither announced to nor readable by runs of manager B.

Layout of a node home::

    HOME/
      profile.json  keys/ data/ token ca.crt approvals/ state/      the "default" profile (optional)
      managers/<name>/
        profile.json  keys/ data/ token ca.crt approvals/ state/    one folder per other manager

`profile.json` names the manager and may point at existing folders (`key_dir`, `data_dir`,
`token_file`, `root_certificates`, relative to the profile folder or absolute), so a node set
up before profiles existed is adopted as the default profile without moving a file
(`fedhaem-node profile add default --home HOME --key-dir OLD/keys --data-dir OLD/data ...`).

A manager's identity is what the node itself was told by its operator: the manager URL and the
SHA-256 fingerprint of the TLS root the node trusts for it (`manager_identity`), pinned in
`profile.json` when the profile is made. Approvals fetched for a profile are stored and used
under that identity only (fl_engine.node.approvals); a name a manager sends plays no part.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fl_engine.deploy.pki import ensure_node_keys, node_key_paths
from fl_engine.node.datasets import list_datasets

DEFAULT_PROFILE = "default"
PROFILE_FILE = "profile.json"
STATUS_FILE = "status.json"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the profile, the file and the reason."""


class ProfileConfig(BaseModel):
    """What `profile.json` holds (paths relative to the profile folder unless absolute)."""

    model_config = ConfigDict(extra="forbid")

    manager: str = Field(description="the manager portal's base URL")
    superlink: str = Field(description="the manager's SuperLink Fleet address HOST:PORT")
    node_name: str = Field(min_length=1, max_length=100, description="this hospital's node name at that manager")
    manager_id: str = Field(description="manager_identity(manager, root CA), pinned when the profile was made")
    key_dir: str = "keys"
    data_dir: str = "data"
    token_file: str = "token"
    root_certificates: str = "ca.crt"

    @field_validator("manager")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"manager must be an http(s) URL, got {v!r}")
        return normalise_url(v)

    @field_validator("superlink")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"superlink must be HOST:PORT, got {v!r}")
        return v


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, no trailing slash (the form identities are computed on)."""
    url = url.strip().rstrip("/")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]+)(.*)$", url)
    if not m:
        return url
    return f"{m.group(1).lower()}://{m.group(2).lower()}{m.group(3)}"


def ca_fingerprint(ca_file: str | Path) -> str:
    """SHA-256 hex of the (first) certificate in a PEM file, over its DER bytes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    path = Path(ca_file)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise ProfileError(f"TLS root {path}: not a readable PEM certificate ({err})") from None
    return cert.fingerprint(hashes.SHA256()).hex()


def manager_identity(manager_url: str, ca_file: str | Path) -> str:
    """The identity approvals are bound to: sha256 of the normalised manager URL and the
    fingerprint of the TLS root this node trusts for that manager ("mgr-" + 32 hex)."""
    raw = f"{normalise_url(manager_url)}\n{ca_fingerprint(ca_file)}"
    return "mgr-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class Profile:
    """One manager profile of a node home: resolved paths and the pinned identity."""

    def __init__(self, name: str, folder: Path, config: ProfileConfig):
        self.name, self.folder, self.config = name, Path(folder), config

    def _path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.folder / p

    @property
    def key_dir(self) -> Path:
        return self._path(self.config.key_dir)

    @property
    def data_dir(self) -> Path:
        return self._path(self.config.data_dir)

    @property
    def token_file(self) -> Path:
        return self._path(self.config.token_file)

    @property
    def root_certificates(self) -> Path:
        return self._path(self.config.root_certificates)

    @property
    def approvals_dir(self) -> Path:
        return self.folder / "approvals"

    @property
    def state_dir(self) -> Path:
        return self.folder / "state"

    def token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except OSError as err:
            raise ProfileError(f"profile {self.name}: token file {self.token_file}: {err}") from None

    def check_identity(self) -> str:
        """The manager identity recomputed from the URL and the TLS root on disk; ProfileError
        when it is not the pinned one (the TLS root was replaced since the profile was made)."""
        now = manager_identity(self.config.manager, self.root_certificates)
        if now != self.config.manager_id:
            raise ProfileError(
                f"profile {self.name}: the manager's TLS root {self.root_certificates} is not the one pinned "
                f"when the profile was made ({now} != {self.config.manager_id}); approvals of the old identity "
                f"are not used. If the manager really changed its CA, run `fedhaem-node profile add {self.name} "
                "--replace ...` (its operator must approve this node again)")
        return now

    def node_options(self) -> dict:
        """Node-config keys of this profile's SuperNode (read by its ClientApps)."""
        return {"manager": self.config.manager, "token-file": str(self.token_file.resolve()),
                "manager-id": self.config.manager_id, "manager-ca": str(self.root_certificates.resolve()),
                "approvals-dir": str(self.approvals_dir.resolve()), "profile": self.name}

    # -- state written by `fedhaem-node start`, read by `fedhaem-node status` ---------------------
    def write_status(self, **fields) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        body = {"profile": self.name, "updated": time.time(), **fields}
        tmp = self.state_dir / f".{STATUS_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(body))
        tmp.replace(self.state_dir / STATUS_FILE)

    def read_status(self) -> dict:
        try:
            return json.loads((self.state_dir / STATUS_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}


def profile_folder(home: str | Path, name: str) -> Path:
    return Path(home) if name == DEFAULT_PROFILE else Path(home) / "managers" / name


def load_profile(home: str | Path, name: str) -> Profile:
    folder = profile_folder(home, name)
    f = folder / PROFILE_FILE
    if not f.is_file():
        known = ", ".join(p for p in list_profile_names(home)) or "none"
        raise ProfileError(f"node home {home}: no profile {name!r} ({f} missing; profiles: {known})")
    try:
        cfg = ProfileConfig.model_validate_json(f.read_text())
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ProfileError(f"{f}: {msgs}") from None
    return Profile(name, folder, cfg)


def list_profile_names(home: str | Path) -> list[str]:
    """The default profile (if HOME/profile.json exists) first, then managers/* in name order."""
    home = Path(home)
    names = [DEFAULT_PROFILE] if (home / PROFILE_FILE).is_file() else []
    mdir = home / "managers"
    if mdir.is_dir():
        names += sorted(p.name for p in mdir.iterdir() if (p / PROFILE_FILE).is_file())
    return names


def load_profiles(home: str | Path, names: list[str] | None = None) -> list[Profile]:
    names = names or list_profile_names(home)
    if not names:
        raise ProfileError(f"node home {home} has no profile; create one with "
                           "`fedhaem-node profile add NAME --home HOME --manager URL --superlink HOST:PORT "
                           "--root-certificates CA --token-file F`")
    return [load_profile(home, n) for n in names]


def add_profile(home: str | Path, name: str, *, manager: str, superlink: str, root_certificates: str | Path,
                token_file: str | Path, node_name: str, key_dir: str | Path | None = None,
                data_dir: str | Path | None = None, replace: bool = False) -> Profile:
    """Create profile `name` in `home`: copies the TLS root and the token in (mode 0600 for the
    token), makes a new SuperNode key pair unless `key_dir` names an existing one, and pins the
    manager identity. `key_dir` / `data_dir` adopt existing folders (migration without moving)."""

    if not NAME_RE.match(name):
        raise ProfileError(f"profile name {name!r}: use 1-40 lower-case letters, digits, '-' or '_'")
    folder = profile_folder(home, name)
    if (folder / PROFILE_FILE).exists() and not replace:
        raise ProfileError(f"profile {name} already exists in {folder} (use --replace to re-pin it)")
    for label, p in (("--root-certificates", root_certificates), ("--token-file", token_file)):
        if not Path(p).is_file():
            raise ProfileError(f"{label} {p}: no such file")
    ident = manager_identity(manager, root_certificates)  # also validates the PEM
    folder.mkdir(parents=True, exist_ok=True)
    if name != DEFAULT_PROFILE:
        os.chmod(folder, 0o700)
    others = {p.name: p for p in _loaded_others(home, name)}
    for other in others.values():
        if key_dir and Path(key_dir).resolve() == other.key_dir.resolve():
            raise ProfileError(f"profile {name}: key dir {key_dir} is profile {other.name}'s; each manager "
                               "gets its own SuperNode key pair")
        if data_dir and Path(data_dir).resolve() == other.data_dir.resolve():
            raise ProfileError(f"profile {name}: data dir {data_dir} is profile {other.name}'s registry; each "
                               "manager gets its own registry (register a dataset in both to share it)")
    shutil.copyfile(root_certificates, folder / "ca.crt")
    tok = folder / "token"
    tok.write_text(Path(token_file).read_text().strip() + "\n")
    tok.chmod(0o600)
    cfg = ProfileConfig(manager=manager, superlink=superlink, node_name=node_name, manager_id=ident,
                        key_dir=str(Path(key_dir).resolve()) if key_dir else "keys",
                        data_dir=str(Path(data_dir).resolve()) if data_dir else "data")
    prof = Profile(name, folder, cfg)
    ensure_node_keys(prof.key_dir)
    prof.data_dir.mkdir(parents=True, exist_ok=True)
    prof.approvals_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(prof.approvals_dir, 0o700)
    (folder / PROFILE_FILE).write_text(cfg.model_dump_json(indent=1) + "\n")
    return prof


def _loaded_others(home, name) -> list[Profile]:
    out = []
    for n in list_profile_names(home):
        if n != name:
            try:
                out.append(load_profile(home, n))
            except ProfileError:
                pass
    return out


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def profile_state(prof: Profile) -> dict:
    """One row of `fedhaem-node status`: the profile, its manager and what `start` last wrote."""

    st = prof.read_status()
    state = st.get("state", "never started")
    if st and state not in ("stopped",) and not pid_alive(st.get("pid")):
        state = "stopped (the start process is gone)"
    keys = node_key_paths(prof.key_dir)
    key_fp = (hashlib.sha256(keys.public_key.read_bytes()).hexdigest()[:16]
              if keys.public_key.is_file() else None)
    try:
        identity_ok, ident_error = prof.check_identity() == prof.config.manager_id, None
    except ProfileError as err:
        identity_ok, ident_error = False, str(err)
    try:
        datasets = [f"{d['name']} v{d['version']}" for d in list_datasets(prof.data_dir)]
    except Exception as err:  # a broken registry is shown, not hidden
        datasets = [f"registry error: {err}"]
    return {"profile": prof.name, "manager": prof.config.manager, "superlink": prof.config.superlink,
            "node_name": prof.config.node_name, "manager_id": prof.config.manager_id,
            "identity_ok": identity_ok, "identity_error": ident_error, "public_key_sha256": key_fp,
            "datasets": datasets, "state": state, "flower_node_id": st.get("flower_node_id"),
            "pid": st.get("pid"), "updated": st.get("updated"), "folder": str(prof.folder)}
