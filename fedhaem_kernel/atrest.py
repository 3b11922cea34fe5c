"""Encryption at rest: envelope encryption of files with AES-256-GCM (the `cryptography` package).

Every file gets its own random 256-bit data key; the data key is wrapped by a key-encryption key
(KEK) held by a `KeyProvider` (a KMS-shaped interface: `LocalKeyring` reads versioned KEKs from a
key file or the environment; a real KMS plugs in behind the same three calls). The file is

    header  = MAGIC "FHAR" | version (1) | chunk size (u32) | nonce prefix (7 bytes)     (16 bytes,
              never changes: every chunk's associated data)
              | key id length (u8) | key id | wrapped data key length (u16) | wrapped data key
    body    = chunks: AES-256-GCM(data key, nonce = prefix | chunk index (u32) | last flag (u8),
              associated data = the 16 fixed header bytes | chunk index | last flag)

so reading never needs the whole file in memory (a chunk at a time, random access), a dropped or
reordered chunk fails its tag, a file cut at a chunk boundary fails the last-chunk flag, and the
wrapped data key is bound to this file and to its key id (the KEK wrap's associated data is the
fixed header + key id). Key rotation rewrites the header only (the data key re-wrapped under the
current KEK, the chunks copied untouched) through a temporary file and an atomic rename, so an
interrupted rotation leaves every file readable and a re-run finishes it.

Plain Python over `cryptography`: no Django, no torch; the portal and the hospital node both use
it. Errors name the file.
"""
from __future__ import annotations

import base64
import io
import json
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"FHAR"
VERSION = 1
CHUNK_SIZE = 1 << 20  # 1 MiB of plaintext per chunk
TAG = 16
KEY_BYTES = 32
_FIXED = struct.Struct(">4sBI7s")  # magic, version, chunk size, nonce prefix: 16 bytes
TMP_MARK = ".atrest-tmp-"


# --- errors -------------------------------------------------------------------------------------

class AtRestError(Exception):
    """A file at rest cannot be read or written; the message names the file."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TamperedFile(AtRestError):
    pass


class TruncatedFile(AtRestError):
    pass


class UnknownKey(AtRestError):
    pass


class NotEncrypted(AtRestError):
    """A legacy plaintext file: readable only through the migrate path, which encrypts it."""


class KeyringError(Exception):
    """The keyring itself is malformed or missing; the message names its source."""


# --- key providers ------------------------------------------------------------------------------

class KeyProvider(Protocol):
    """What a key-encryption-key service offers (the shape of AWS KMS / Vault transit)."""

    @property
    def current_key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes = b"") -> tuple[str, bytes]:
        """(key id, wrapped data key) under the current KEK, bound to `context`."""

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes = b"") -> bytes:
        """The data key; KeyError for an unknown key id, InvalidTag for a wrong context/key."""


def new_key_id() -> str:
    return f"kek-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


@dataclass
class LocalKeyring:
    """Versioned KEKs, one current, from a JSON keyring:
    {"current": "<id>", "keys": {"<id>": "<base64 of 32 bytes>", ...}}.
    `path` is where it was read from (None when it came from an environment variable: such a
    keyring cannot be changed by this process)."""

    keys: dict[str, bytes]
    current: str
    path: Path | None = None
    source: str = "keyring"

    def __post_init__(self):
        if not self.keys:
            raise KeyringError(f"{self.source}: the keyring holds no key")
        if self.current not in self.keys:
            raise KeyringError(f"{self.source}: the current key {self.current!r} is not among its keys")
        for kid, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise KeyringError(f"{self.source}: key {kid!r} is {len(key)} bytes, not {KEY_BYTES}")
            if not kid or len(kid.encode()) > 255:
                raise KeyringError(f"{self.source}: key id {kid!r} must be 1-255 bytes")

    # KeyProvider
    @property
    def current_key_id(self) -> str:
        return self.current

    def key_ids(self) -> list[str]:
        return list(self.keys)

    def wrap(self, data_key: bytes, context: bytes = b"") -> tuple[str, bytes]:
        nonce = os.urandom(12)
        kid = self.current
        return kid, nonce + AESGCM(self.keys[kid]).encrypt(nonce, data_key, context + kid.encode())

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes = b"") -> bytes:
        kek = self.keys[key_id]  # KeyError: unknown key id
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], context + key_id.encode())

    # reading and writing the keyring
    @classmethod
    def from_json(cls, text: str, source: str = "keyring", path: Path | None = None) -> "LocalKeyring":
        try:
            data = json.loads(text)
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
            current = str(data["current"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"{source}: not a keyring ({{\"current\": id, \"keys\": {{id: base64}}}}): "
                               f"{exc!r}") from None
        return cls(keys, current, path, source)

    @classmethod
    def from_file(cls, path: str | Path) -> "LocalKeyring":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise KeyringError(f"key file {path} cannot be read: {exc}") from None
        return cls.from_json(text, f"key file {path}", path)

    @classmethod
    def create(cls, path: str | Path) -> "LocalKeyring":
        """A new keyring with one fresh KEK, written to `path` (mode 0600); refuses to overwrite."""
        path = Path(path)
        kid = new_key_id()
        ring = cls({kid: os.urandom(KEY_BYTES)}, kid, path, f"key file {path}")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            raise KeyringError(f"key file {path} already exists")
        # written in full beside it, then linked into place: a process starting at the same time
        # sees either no key file or a complete one, and only one keyring wins
        tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(ring.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            raise KeyringError(f"key file {path} already exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        return ring

    @classmethod
    def load_or_create(cls, path: str | Path) -> "LocalKeyring":
        path = Path(path)
        if not path.exists():
            try:
                return cls.create(path)
            except KeyringError:  # another process created it meanwhile
                pass
        return cls.from_file(path)

    def to_json(self) -> str:
        return json.dumps({"current": self.current,
                           "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()}}, indent=1)

    def save(self) -> None:
        if self.path is None:
            raise KeyringError(f"{self.source} comes from the environment: change it there "
                               "(add a new key and make it current), then re-run the rotation")
        _atomic_write_text(self.path, self.to_json())

    def add_key(self) -> str:
        """A new KEK, made current and saved; returns its id (the old ones stay for reading)."""
        kid = new_key_id()
        while kid in self.keys:
            kid = new_key_id()
        keys = {**self.keys, kid: os.urandom(KEY_BYTES)}
        LocalKeyring(keys, kid, self.path, self.source)  # validate
        self.keys, self.current = keys, kid
        self.save()
        return kid

    def retire(self, key_id: str) -> None:
        """Drop KEK `key_id` (never the current one) and save."""
        if key_id == self.current:
            raise KeyringError(f"{self.source}: {key_id!r} is the current key; rotate to a new one first")
        if key_id not in self.keys:
            raise KeyringError(f"{self.source}: no key {key_id!r}")
        self.keys = {k: v for k, v in self.keys.items() if k != key_id}
        self.save()


def _atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- the header ---------------------------------------------------------------------------------

@dataclass
class Header:
    chunk_size: int
    prefix: bytes
    key_id: str
    wrapped: bytes
    fixed: bytes = field(repr=False, default=b"")

    def __post_init__(self):
        if not self.fixed:
            self.fixed = _FIXED.pack(MAGIC, VERSION, self.chunk_size, self.prefix)

    def pack(self) -> bytes:
        kid = self.key_id.encode()
        return self.fixed + struct.pack(">B", len(kid)) + kid + struct.pack(">H", len(self.wrapped)) + self.wrapped

    @property
    def size(self) -> int:
        return len(self.fixed) + 1 + len(self.key_id.encode()) + 2 + len(self.wrapped)

    def wrap_context(self) -> bytes:
        return self.fixed


def is_encrypted(path: str | Path) -> bool:
    """True when `path` starts with the at-rest magic."""
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def read_header(f: BinaryIO, path) -> Header:
    fixed = f.read(_FIXED.size)
    if len(fixed) < 4 or fixed[:4] != MAGIC:
        raise NotEncrypted(path, "not encrypted at rest (a plaintext file): encrypt it with "
                                 "`python manage.py encrypt_at_rest --migrate` before it can be read")
    if len(fixed) < _FIXED.size:
        raise TruncatedFile(path, "truncated inside its encryption header")
    magic, version, chunk_size, prefix = _FIXED.unpack(fixed)
    if version != VERSION:
        raise TamperedFile(path, f"unsupported at-rest format version {version}")
    if not 1 <= chunk_size <= 1 << 30:
        raise TamperedFile(path, f"header names an impossible chunk size {chunk_size}")
    try:
        (n,) = struct.unpack(">B", f.read(1))
        kid = f.read(n)
        (m,) = struct.unpack(">H", f.read(2))
        wrapped = f.read(m)
    except struct.error:
        raise TruncatedFile(path, "truncated inside its encryption header") from None
    if len(kid) != n or len(wrapped) != m:
        raise TruncatedFile(path, "truncated inside its encryption header")
    try:
        key_id = kid.decode()
    except UnicodeDecodeError:
        raise TamperedFile(path, "header key id is not text: the header was altered") from None
    return Header(chunk_size, prefix, key_id, wrapped, fixed)


def _unwrap(keys: KeyProvider, h: Header, path) -> bytes:
    try:
        return keys.unwrap(h.key_id, h.wrapped, h.wrap_context())
    except KeyError:
        raise UnknownKey(path, f"encrypted under key {h.key_id!r}, which the keyring does not hold "
                               "(a retired or foreign key-encryption key)") from None
    except InvalidTag:
        raise TamperedFile(path, "its wrapped data key does not authenticate: the header was altered "
                                 f"or key {h.key_id!r} is not the key it was written with") from None


def _nonce_aad(h: Header, index: int, last: bool) -> tuple[bytes, bytes]:
    tail = struct.pack(">IB", index, 1 if last else 0)
    return h.prefix + tail, h.fixed + tail


# --- writing ------------------------------------------------------------------------------------

class EncryptingWriter(io.RawIOBase):
    """A write-only file that encrypts chunk by chunk into a temporary file beside `path` and
    renames it over `path` on close (never on an exception inside `with`)."""

    def __init__(self, path: str | Path, keys: KeyProvider, chunk_size: int = CHUNK_SIZE):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(data_key)
        h = Header(chunk_size, os.urandom(7), "", b"")
        key_id, wrapped = keys.wrap(data_key, h.wrap_context())
        self._h = Header(chunk_size, h.prefix, key_id, wrapped, h.fixed)
        self._tmp = self.path.with_name(f".{self.path.name}{TMP_MARK}{secrets.token_hex(4)}")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._f = os.fdopen(fd, "wb")
        self._f.write(self._h.pack())
        self._buf = bytearray()
        self._index = 0
        self._done = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self._done:
            raise ValueError(f"{self.path}: write to a closed encrypted file")
        self._buf += data
        cs = self._h.chunk_size
        while len(self._buf) > cs:  # keep the last chunk back: it may be the final one
            self._emit(bytes(self._buf[:cs]), last=False)
            del self._buf[:cs]
        return len(data)

    def _emit(self, chunk: bytes, last: bool) -> None:
        nonce, aad = _nonce_aad(self._h, self._index, last)
        self._f.write(self._aead.encrypt(nonce, chunk, aad))
        self._index += 1

    def close(self) -> None:
        if not self._done and not self.closed:
            self._done = True
            try:
                self._emit(bytes(self._buf), last=True)
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
                os.replace(self._tmp, self.path)
            except BaseException:
                self.abort()
                raise
        super().close()

    def abort(self) -> None:
        """Discard what was written; `path` is left as it was."""
        self._done = True
        try:
            self._f.close()
        finally:
            self._tmp.unlink(missing_ok=True)
        super().close()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False


def write_stream(path: str | Path, src: BinaryIO, keys: KeyProvider, chunk_size: int = CHUNK_SIZE) -> int:
    """Encrypt everything `src` yields into `path` (atomically), a chunk at a time; bytes read."""
    n = 0
    with EncryptingWriter(path, keys, chunk_size) as w:
        while True:
            block = src.read(chunk_size)
            if not block:
                break
            w.write(block)
            n += len(block)
    return n


def write_bytes(path: str | Path, data: bytes, keys: KeyProvider, chunk_size: int = CHUNK_SIZE) -> None:
    with EncryptingWriter(path, keys, chunk_size) as w:
        w.write(data)


# --- reading ------------------------------------------------------------------------------------

class DecryptingReader(io.RawIOBase):
    """A read-only, seekable view of the plaintext of encrypted file `path`: one chunk decrypted
    at a time (random access by chunk), every chunk authenticated before any byte is returned."""

    def __init__(self, path: str | Path, keys: KeyProvider):
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)
        self._f = open(self.path, "rb")
        try:
            self._h = read_header(self._f, self.path)
            self._aead = AESGCM(_unwrap(keys, self._h, self.path))
            body = os.fstat(self._f.fileno()).st_size - self._h.size
            ct = self._h.chunk_size + TAG
            if body < TAG:
                raise TruncatedFile(self.path, "truncated: no final chunk after the header")
            self._chunks = -(-body // ct)
            if body - (self._chunks - 1) * ct < TAG:
                raise TruncatedFile(self.path, "truncated inside a chunk")
            self.size = body - TAG * self._chunks
        except BaseException:
            self._f.close()
            raise
        self._pos = 0
        self._cache: tuple[int, bytes] | None = None
        try:  # a truncated or altered end fails at open, before any byte is served; other chunks
            self._chunk(self._chunks - 1)  # are authenticated as they are read
        except BaseException:
            self._f.close()
            raise

    @property
    def key_id(self) -> str:
        return self._h.key_id

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        pos = base + offset
        if pos < 0:
            raise ValueError(f"{self.path}: negative seek position {pos}")
        self._pos = pos
        return pos

    def _chunk(self, index: int) -> bytes:
        if self._cache and self._cache[0] == index:
            return self._cache[1]
        ct = self._h.chunk_size + TAG
        self._f.seek(self._h.size + index * ct)
        blob = self._f.read(ct)
        last = index == self._chunks - 1
        nonce, aad = _nonce_aad(self._h, index, last)
        try:
            plain = self._aead.decrypt(nonce, blob, aad)
        except InvalidTag:
            if last:
                n2, a2 = _nonce_aad(self._h, index, False)
                try:
                    self._aead.decrypt(n2, blob, a2)
                except InvalidTag:
                    pass
                else:
                    raise TruncatedFile(self.path, f"truncated: chunk {index} is not the file's last one "
                                                   "and what followed it is missing") from None
            raise TamperedFile(self.path, f"chunk {index} does not authenticate: the file was altered "
                                          "or truncated") from None
        self._cache = (index, plain)
        return plain

    def readinto(self, b) -> int:
        if self._pos >= self.size:
            return 0
        cs = self._h.chunk_size
        index, offset = divmod(self._pos, cs)
        plain = self._chunk(index)
        n = min(len(b), len(plain) - offset)
        b[:n] = plain[offset:offset + n]
        self._pos += n
        return n

    def verify(self) -> None:
        """Authenticate every chunk (a full read without keeping the plaintext)."""
        for i in range(self._chunks):
            self._chunk(i)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self._cache = None
        super().close()


def open_encrypted(path: str | Path, keys: KeyProvider, mode: str = "rb", chunk_size: int = CHUNK_SIZE):
    """"rb": a buffered, seekable plaintext reader; "wb": an atomic encrypting writer."""
    if mode == "rb":
        return io.BufferedReader(DecryptingReader(path, keys), buffer_size=64 * 1024)
    if mode == "wb":
        return EncryptingWriter(path, keys, chunk_size)
    raise ValueError(f"{path}: mode {mode!r} is not 'rb' or 'wb'")


def read_bytes(path: str | Path, keys: KeyProvider) -> bytes:
    with DecryptingReader(path, keys) as r:
        out = bytearray(r.size)
        view = memoryview(out)
        got = 0
        while got < r.size:
            got += r.readinto(view[got:])
        return bytes(out)


def read_stream(path: str | Path, dst: BinaryIO, keys: KeyProvider) -> int:
    """Decrypt `path` into `dst` a chunk at a time; bytes written."""
    n = 0
    with DecryptingReader(path, keys) as r:
        while True:
            block = r.read(r._h.chunk_size)
            if not block:
                return n
            dst.write(block)
            n += len(block)


# --- rotation and migration ---------------------------------------------------------------------

def rewrap_file(path: str | Path, keys: KeyProvider) -> bool:
    """Re-wrap `path`'s data key under the current KEK (header rewrite; the chunks are copied, not
    re-encrypted), atomically. False when it already was under the current KEK."""
    path = Path(path)
    with open(path, "rb") as f:
        h = read_header(f, path)
        if h.key_id == keys.current_key_id:
            return False
        data_key = _unwrap(keys, h, path)
        key_id, wrapped = keys.wrap(data_key, h.wrap_context())
        new = Header(h.chunk_size, h.prefix, key_id, wrapped, h.fixed)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(new.pack())
                while block := f.read(CHUNK_SIZE):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return True


def encrypt_in_place(path: str | Path, keys: KeyProvider, chunk_size: int = CHUNK_SIZE) -> bool:
    """The migrate path: encrypt legacy plaintext file `path` in place (atomic rename). False when
    it already was encrypted."""
    path = Path(path)
    if is_encrypted(path):
        return False
    mode = path.stat().st_mode & 0o777
    with open(path, "rb") as src:
        write_stream(path, src, keys, chunk_size)
    os.chmod(path, mode & 0o700 or 0o600)
    return True


def iter_files(roots: Iterable[str | Path]) -> Iterator[Path]:
    """Regular files under `roots` (files or folders), temporary files of an interrupted write
    left out, symlinks not followed."""
    for root in roots:
        root = Path(root)
        if root.is_file() and not root.is_symlink():
            yield root
            continue
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if TMP_MARK not in name and p.is_file() and not p.is_symlink():
                    yield p


@dataclass
class Report:
    """What a rotation or migration did, file counts by outcome; `errors` names each failure."""

    changed: int = 0
    unchanged: int = 0
    plaintext: int = 0
    errors: list[str] = field(default_factory=list)
    key_ids: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"changed": self.changed, "unchanged": self.unchanged, "plaintext": self.plaintext,
                "errors": list(self.errors), "key_ids": dict(self.key_ids)}


def rotate(roots: Iterable[str | Path], keys: KeyProvider,
           progress: Callable[[Path, str], None] | None = None) -> Report:
    """Re-wrap every encrypted file under `roots` to the current KEK. Safe to interrupt and run
    again: each file is replaced atomically, and files already under the current KEK are skipped.
    Plaintext files are counted, not touched (see `migrate`); a file that cannot be re-wrapped is
    named in `errors` and the others go on."""
    rep = Report()
    for path in iter_files(roots):
        try:
            if not is_encrypted(path):
                rep.plaintext += 1
                outcome = "plaintext"
            elif rewrap_file(path, keys):
                rep.changed += 1
                outcome = "rewrapped"
            else:
                rep.unchanged += 1
                outcome = "current"
        except (AtRestError, OSError) as exc:
            rep.errors.append(str(exc))
            outcome = "error"
        if progress:
            progress(path, outcome)
    rep.key_ids = census(roots)
    return rep


def migrate(roots: Iterable[str | Path], keys: KeyProvider,
            progress: Callable[[Path, str], None] | None = None) -> Report:
    """Encrypt every plaintext file under `roots` in place; already encrypted files are left."""
    rep = Report()
    for path in iter_files(roots):
        try:
            if encrypt_in_place(path, keys):
                rep.changed += 1
                outcome = "encrypted"
            else:
                rep.unchanged += 1
                outcome = "already encrypted"
        except (AtRestError, OSError) as exc:
            rep.errors.append(str(exc))
            outcome = "error"
        if progress:
            progress(path, outcome)
    return rep


def census(roots: Iterable[str | Path]) -> dict[str, int]:
    """Files under `roots` per KEK id ("plaintext" for unencrypted ones): what a retirement needs."""
    out: dict[str, int] = {}
    for path in iter_files(roots):
        try:
            with open(path, "rb") as f:
                kid = read_header(f, path).key_id
        except NotEncrypted:
            kid = "plaintext"
        except (AtRestError, OSError):
            kid = "unreadable"
        out[kid] = out.get(kid, 0) + 1
    return out


# --- helpers for callers that take an optional keyring (the hospital node's ETL and registry) ---

class MissingKeyring(AtRestError):
    """An encrypted file was to be read, but no keyring was given to read it with."""


def write_file(path: str | Path, data: bytes, keys: KeyProvider | None) -> None:
    """Write `data` to `path`: encrypted (atomically) with `keys`, as it is without."""
    if keys is None:
        Path(path).write_bytes(data)
    else:
        write_bytes(path, data, keys)


def read_file(path: str | Path, keys: KeyProvider | None) -> bytes:
    """The plaintext of `path`: decrypted when it is encrypted (MissingKeyring naming the file when
    `keys` is None), read as it is when it is a plaintext file."""
    if not is_encrypted(path):
        return Path(path).read_bytes()
    if keys is None:
        raise MissingKeyring(path, "encrypted at rest, and no keyring was given to read it (the node's "
                                   "key file or FEDHAEM_NODE_AT_REST_KEYS)")
    return read_bytes(path, keys)


def text_writer(path: str | Path, keys: KeyProvider | None, encoding: str = "utf-8", newline: str | None = None):
    """A text file object writing `path`: through an encrypting writer with `keys` (the file
    appears, complete, when it is closed), a plain file without."""
    if keys is None:
        return open(path, "w", encoding=encoding, newline=newline)
    return io.TextIOWrapper(io.BufferedWriter(EncryptingWriter(path, keys), buffer_size=256 * 1024),
                            encoding=encoding, newline=newline)


def text_reader(path: str | Path, keys: KeyProvider | None, encoding: str = "utf-8"):
    """A text file object reading `path`'s plaintext, as `read_file` decides (streaming)."""
    if not is_encrypted(path):
        return open(path, encoding=encoding)
    if keys is None:
        raise MissingKeyring(path, "encrypted at rest, and no keyring was given to read it (the node's "
                                   "key file or FEDHAEM_NODE_AT_REST_KEYS)")
    return io.TextIOWrapper(open_encrypted(path, keys), encoding=encoding)


def copy_encrypted(src: str | Path, dst: str | Path, keys: KeyProvider | None) -> None:
    """Copy `src` to `dst` so that `dst` is encrypted when `keys` is given: an encrypted `src` is
    copied as it is (its data key stays wrapped), a plaintext one is encrypted on the way."""
    if keys is None or is_encrypted(src):
        with open(src, "rb") as f, open(dst, "wb") as out:
            while block := f.read(CHUNK_SIZE):
                out.write(block)
        return
    with open(src, "rb") as f:
        write_stream(dst, f, keys)
