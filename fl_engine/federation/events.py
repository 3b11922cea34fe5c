"""Run events: what a federation reports while it runs, numbered so that the portal can ingest
each one exactly once whether it arrives by POST, by a retried POST, or by replay of the
ServerApp's log through the SuperLink.

Event: {"run": portal run id, "seq": 1, 2, ..., "type": "started" | "round" | "phase" |
"finished" | "failed", ...}. A "round" event holds {"round", "metrics": [{"node", "name",
"value"}], "phase": "round" | "comparison"}; "finished" holds "artefacts": {file name: base64 of
the zlib-compressed bytes} (the model files of a survival run, the cohort of a generation run);
"failed" holds "reason".

The token of a run is an HMAC of its id under a key that only the portal and the ServerApp hold
(`FEDHAEM_RUN_EVENTS_KEY_FILE`): the run config reaches every node, so it carries no secret.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import sys
import time
import zlib
from pathlib import Path

log = logging.getLogger("fedhaem.federation")

LOG_PREFIX = "FEDHAEM-EVENT "
KEY_ENV = "FEDHAEM_RUN_EVENTS_KEY_FILE"
# Artefacts larger than this are not repeated in the log (the POST still carries them).
MAX_LOGGED_ARTEFACTS = 4 * 1024 * 1024
TYPES = ("started", "round", "phase", "node_missed", "finished", "failed")


def run_token(key: bytes, portal_run_id: str | int) -> str:
    """The bearer token of one run's events: hex HMAC-SHA256 of the run id under `key`."""
    return hmac.new(key, f"fedhaem-run:{portal_run_id}".encode(), hashlib.sha256).hexdigest()


def load_key(path: str | os.PathLike | None = None) -> bytes | None:
    """The events key from `path` or $FEDHAEM_RUN_EVENTS_KEY_FILE; None when neither is set."""
    path = path or os.environ.get(KEY_ENV)
    if not path:
        return None
    data = Path(path).read_bytes().strip()
    if len(data) < 16:
        raise ValueError(f"{path}: the run-events key is shorter than 16 bytes")
    return data


def pack_artefact(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 6)).decode("ascii")


def unpack_artefact(text: str, limit: int = 512 * 1024 * 1024) -> bytes:
    """base64(zlib(bytes)) -> bytes; ValueError when malformed or larger than `limit`."""
    try:
        d = zlib.decompressobj()
        out = d.decompress(base64.b64decode(text, validate=True), limit)
    except (ValueError, zlib.error) as err:
        raise ValueError(f"malformed artefact: {err}") from None
    if d.unconsumed_tail:
        raise ValueError(f"artefact larger than {limit} bytes")
    return out


def finite(obj):
    """NaN and infinities -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def parse_log_events(text: str) -> list[dict]:
    """The events printed in a ServerApp log (lines starting with LOG_PREFIX), by seq, unique."""
    out: dict[int, dict] = {}
    for line in text.splitlines():
        i = line.find(LOG_PREFIX)
        if i < 0:
            continue
        try:
            ev = json.loads(line[i + len(LOG_PREFIX):])
        except json.JSONDecodeError:
            continue  # a line cut by the log transport: the POST may have carried it
        if isinstance(ev, dict) and isinstance(ev.get("seq"), int) and ev.get("type") in TYPES:
            out.setdefault(ev["seq"], ev)
    return [out[k] for k in sorted(out)]


class EventSink:
    """Numbers events and delivers them: a JSON-lines file (`path`), a POST to `url` retried
    until `deliver_s` runs out, and one log line each when `echo` (the SuperLink keeps the
    ServerApp's log: the portal's reconciler replays what a POST did not deliver)."""

    def __init__(self, run: str | int = "", path: str | Path | None = None, url: str = "",
                 token: str = "", echo: bool = False, deliver_s: float = 120.0):
        self.run = int(run) if str(run).isdigit() else run
        self.path = Path(path) if path else None
        self.url = url
        self.token = token
        self.echo = echo
        self.deliver_s = deliver_s
        self.seq = 0
        self.undelivered: list[dict] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, cfg) -> "EventSink":
        token = ""
        if cfg.events_url:
            key = load_key()
            if key is None:
                log.warning("events_url is set but %s is not: the portal will refuse the events "
                            "and replay them from the log", KEY_ENV)
            else:
                token = run_token(key, cfg.portal_run_id)
        return cls(cfg.portal_run_id, cfg.metrics_path or None, cfg.events_url, token,
                   echo=bool(cfg.events_url))

    # the loop's vocabulary -------------------------------------------------------------------
    def round(self, round_: int, metrics: list[dict], phase: str = "round") -> None:
        """One round's metrics; phase "comparison" marks the isolated/conventional figures added
        to the last round after training (not a new round for a live chart)."""
        self.emit("round", round=round_, metrics=metrics, phase=phase)

    def event(self, event: str, **info) -> None:
        """Lifecycle: "started", "finished" (artefacts=...), "error"/"failed" (reason=...), or a
        phase name (shown on the run page)."""
        if event == "error":
            event = "failed"
        if event not in TYPES:
            info = {"phase": event, **info}
            event = "phase"
        self.emit(event, **info)

    def finished(self, files: dict[str, bytes], **info) -> None:
        self.emit("finished", artefacts={k: pack_artefact(v) for k, v in files.items()}, **info)

    # delivery --------------------------------------------------------------------------------
    def emit(self, type_: str, **body) -> dict:
        self.seq += 1
        ev = finite({"run": self.run, "seq": self.seq, "type": type_, "time": time.time(), **body})
        line = json.dumps(ev, allow_nan=False)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        if self.echo:
            if len(line) > MAX_LOGGED_ARTEFACTS:
                slim = {k: v for k, v in ev.items() if k != "artefacts"}
                slim["artefacts_omitted"] = True
                line = json.dumps(slim)
            sys.stdout.write(LOG_PREFIX + line + "\n")
            sys.stdout.flush()
        if self.url:
            self.undelivered.append(ev)
            if type_ in ("finished", "failed"):
                self.flush(self.deliver_s)
            else:  # while the portal is away, do not hold up training: one try, the log keeps it
                self.flush(0.0 if len(self.undelivered) > 1 else 5.0)
        return ev

    def flush(self, within_s: float) -> bool:
        """POST every undelivered event in order, retrying for at most `within_s` seconds;
        True when none is left. The run goes on either way: the log holds them too."""
        import requests

        deadline = time.monotonic() + within_s
        pause = 0.5
        while self.undelivered:
            ev = self.undelivered[0]
            try:
                r = requests.post(self.url, json=ev, timeout=30,
                                  headers={"Authorization": f"Token {self.token}"} if self.token else {})
                if r.status_code < 300 or r.status_code in (400, 401, 403, 404, 409):
                    if r.status_code >= 300:  # the portal refused it for good: do not loop
                        log.warning("event %s of run %s refused: HTTP %s %s", ev["seq"], self.run,
                                    r.status_code, r.text[:200])
                    self.undelivered.pop(0)
                    pause = 0.5
                    continue
                err = f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                err = str(exc)
            if time.monotonic() + pause > deadline:
                log.warning("run %s: %d event(s) not delivered to %s (%s); the log keeps them",
                            self.run, len(self.undelivered), self.url, err[:200])
                return False
            time.sleep(pause)
            pause = min(pause * 2, 10.0)
        return True
