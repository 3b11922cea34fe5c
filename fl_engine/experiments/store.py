"""Where a grid's results live on disk while it runs: written seed by seed, resumable.

Layout of the output folder:

- ``grid.json``: the grid's settings (GridConfig without the seeds) and the cohort it ran on
  (source, rows, fingerprint); a resumed grid must match it exactly.
- ``seeds/seed-<n>.json``: one finished seed (its result rows, per-round rows and, for the
  grid's first seed, the Kaplan-Meier panels), written atomically (a temporary file in the same
  folder, then renamed), so an interrupted grid leaves whole seeds only.

`parse_seeds` reads the command line's ``--seeds``: ``5`` (the first five seeds, 0-4) or a list
of seeds and ranges such as ``3,5-9``.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

CONFIG_FILE = "grid.json"
SEEDS_DIR = "seeds"
MAX_SEED = 2**31 - 1
MAX_SEEDS = 1000


class GridStoreError(ValueError):
    """The output folder cannot take this grid (another grid's results, a changed config)."""


def parse_seeds(spec: str) -> tuple[int, ...]:
    """``"5"`` -> (0, 1, 2, 3, 4); ``"3,5-9"`` -> (3, 5, 6, 7, 8, 9), sorted, no duplicate. A
    single seed other than the first N is written as a range (``"7-7"``) or with a comma
    (``"7,"``). ValueError naming the bad part."""
    text = str(spec).strip()
    if not text:
        raise ValueError("--seeds is empty: give a count (5) or seeds and ranges (3,5-9)")
    if re.fullmatch(r"\d+", text):
        n = int(text)
        if not 1 <= n <= MAX_SEEDS:
            raise ValueError(f"--seeds {text}: a count of seeds must be between 1 and {MAX_SEEDS}")
        return tuple(range(n))
    seeds: set[int] = set()
    parts = text.split(",")
    if parts[-1].strip() == "" and len(parts) > 1:
        parts = parts[:-1]  # "7," is the single seed 7
    for part in parts:
        p = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", p)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ValueError(f"--seeds {text}: range {p!r} runs backwards (write {hi}-{lo})")
            if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                raise ValueError(f"--seeds {text}: more than {MAX_SEEDS} seeds")
            seeds.update(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", p):
            seeds.add(int(p))
        else:
            why = "an empty entry" if not p else f"{p!r} is not a seed (a whole number >= 0) or a range (5-9)"
            raise ValueError(f"--seeds {text}: {why}")
    if max(seeds) > MAX_SEED:
        raise ValueError(f"--seeds {text}: seeds must be at most {MAX_SEED}")
    return tuple(sorted(seeds))


def config_record(cfg, cohort: dict) -> dict:
    """What grid.json holds: the GridConfig's fields except the seeds, and the cohort."""
    c = asdict(cfg)
    c.pop("seeds", None)
    return {"config": json.loads(json.dumps(c, default=_plain)), "cohort": cohort}


def differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: stored X, now Y' for every setting that differs between two config records."""
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k, "<absent>"), current.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: stored {a!r}, now {b!r}")
    return out


def seed_path(out: Path, seed: int) -> Path:
    return Path(out) / SEEDS_DIR / f"seed-{seed}.json"


def written_seeds(out: Path) -> list[int]:
    """Seeds whose file is in the output folder (whole files only: they are renamed in)."""
    d = Path(out) / SEEDS_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := re.fullmatch(r"seed-(\d+)\.json", p.name)))


def open_store(out: Path, record: dict, resume: bool) -> list[int]:
    """Prepare `out` for a grid described by `record` (config_record); returns the seeds already
    written there (to skip). Without `resume`, a folder that holds another grid's seeds is
    refused; with it, grid.json must exist and match `record`, else GridStoreError naming what
    differs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GridStoreError(f"--out {out}: an existing file, not a folder")
    cfg_file = out / CONFIG_FILE
    done = written_seeds(out)
    if resume:
        if not cfg_file.is_file():
            raise GridStoreError(f"--resume: {out} holds no grid to resume ({CONFIG_FILE} not found)")
        try:
            stored = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise GridStoreError(f"--resume: {cfg_file} cannot be read: {err}") from None
        diff = differences(stored, json.loads(json.dumps(record, default=_plain)))
        if diff:
            raise GridStoreError(f"--resume: the grid in {out} was run with other settings, so its seeds "
                                 f"cannot be mixed with these: " + "; ".join(diff))
        return done
    if done:
        raise GridStoreError(f"--out {out} already holds a grid ({len(done)} seed(s) written: "
                             f"{', '.join(map(str, done[:10]))}{'...' if len(done) > 10 else ''}); "
                             "add --resume to continue it, or choose another folder")
    (out / SEEDS_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write(cfg_file, json.dumps(record, indent=1, default=_plain))
    return []


def write_seed(out: Path, seed: int, payload: dict) -> Path:
    """Write one finished seed's payload (JSON; NaN kept as NaN) atomically."""
    path = seed_path(out, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"seed": int(seed), **payload}, default=_plain))
    return path


def read_seed(out: Path, seed: int) -> dict:
    """A seed's payload; GridStoreError naming the file when it is unreadable."""
    path = seed_path(out, seed)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise GridStoreError(f"{path}: cannot be read ({err}); delete it to recompute that seed") from None


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(v):
    """JSON for numpy scalars and arrays, tuples as lists."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    raise TypeError(f"not JSON: {type(v).__name__}")
