"""From an ML-ready table to model inputs, fitted federatedly.

Each node computes per-column aggregate statistics (`column_stats`: counts, sums, sums of
squares, category counts; never rows). The manager adds them up (`merge_stats`; the sum of node
statistics equals the pooled statistics exactly) and builds one `Preprocessor` that every node
applies, so all nodes feed the model identically encoded, standardised inputs.

Missing values are kept visible to the model: a numeric or binary column with any missing value
in the federation gets a companion ``<name>__missing`` indicator and its missing cells take the
global mean (0 after standardisation); a missing categorical value is the all-zero one-hot row
plus the indicator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import UseCaseSchema, get_schema


def resolve_columns(schema: UseCaseSchema, columns, groups=None, features=None) -> list[str]:
    """The feature columns to use: explicit `features`, else every schema feature of `groups`
    (all groups when None) present in `columns`, embedding groups matched by prefix."""
    present = list(columns)
    if features:
        missing = [f for f in features if f not in present]
        if missing:
            raise ValueError(f"features not in the table: {', '.join(missing)}")
        return list(features)
    wanted = set(groups) if groups else None
    out = [f.name for f in schema.features
           if f.name in present and (wanted is None or f.group in wanted)]
    if wanted is None or "embedding" in wanted:
        for g in schema.embeddings:
            out += [c for c in present if g.matches(c)]
    return out


def column_stats(df: pd.DataFrame, columns: list[str], schema: UseCaseSchema) -> dict:
    """Aggregate statistics of `columns` on one node: JSON-serialisable, no patient rows."""
    stats: dict = {"n": int(len(df)), "columns": {}}
    for name in columns:
        kind = _kind(schema, name)
        s = df[name] if name in df else pd.Series([np.nan] * len(df))
        if kind == "categorical":
            counts = s.dropna().astype(str).value_counts()
            stats["columns"][name] = {
                "kind": kind, "missing": int(s.isna().sum()),
                "counts": {str(k): int(v) for k, v in counts.items()},
            }
        else:
            v = pd.to_numeric(s, errors="coerce")
            ok = v.dropna().to_numpy(dtype=float)
            stats["columns"][name] = {
                "kind": kind, "missing": int(v.isna().sum()), "count": int(ok.size),
                "sum": float(ok.sum()), "sumsq": float((ok ** 2).sum()),
            }
    return stats


def merge_stats(parts: list[dict]) -> dict:
    """Sum node statistics into federation-wide statistics (equal to the pooled ones)."""
    if not parts:
        raise ValueError("no statistics to merge")
    out: dict = {"n": 0, "columns": {}}
    for part in parts:
        out["n"] += int(part["n"])
        for name, c in part["columns"].items():
            acc = out["columns"].setdefault(name, {"kind": c["kind"], "missing": 0})
            acc["missing"] += int(c["missing"])
            if c["kind"] == "categorical":
                counts = acc.setdefault("counts", {})
                for k, v in c["counts"].items():
                    counts[k] = counts.get(k, 0) + int(v)
            else:
                for key in ("count", "sum", "sumsq"):
                    acc[key] = acc.get(key, 0) + c[key]
    return out


@dataclass
class Preprocessor:
    """Encodes a table with federation-wide statistics; JSON round-trips via to_dict/from_dict."""

    use_case: str
    columns: list[str]
    specs: dict = field(default_factory=dict)

    @classmethod
    def from_stats(cls, use_case: str, stats: dict) -> "Preprocessor":
        """Build from merged statistics (`merge_stats`). A column with no observed value in any
        table (a field nobody measured, e.g. one the schema gained since the data were exported)
        is left out: it carries no information, and its constant missing-indicator made a
        generative model (SAVAE) fit a degenerate likelihood."""
        specs = {}
        for name, c in stats["columns"].items():
            if not (c["counts"] if c["kind"] == "categorical" else c["count"]):
                continue
            has_missing = c["missing"] > 0
            if c["kind"] == "categorical":
                cats = sorted(c["counts"])
                schema = get_schema(use_case)
                try:
                    declared = list(schema.feature(name).categories)
                    cats = [k for k in declared if k in c["counts"]] + [k for k in cats if k not in declared]
                except KeyError:
                    pass
                specs[name] = {"kind": "categorical", "categories": cats, "missing": has_missing}
            else:
                n = c["count"]
                mean = c["sum"] / n if n else 0.0
                var = max(c["sumsq"] / n - mean ** 2, 0.0) if n else 0.0
                std = math.sqrt(var) if var > 1e-12 else 1.0
                if c["kind"] == "binary":
                    std = 1.0  # keep 0/1 meaning; centring only
                specs[name] = {"kind": c["kind"], "mean": mean, "std": std, "missing": has_missing}
        return cls(use_case=use_case, columns=[n for n in stats["columns"] if n in specs], specs=specs)

    @classmethod
    def fit(cls, use_case: str, df: pd.DataFrame, columns: list[str]) -> "Preprocessor":
        """Centralised fit: the same as merging one node's statistics."""
        return cls.from_stats(use_case, column_stats(df, columns, get_schema(use_case)))

    @property
    def output_names(self) -> list[str]:
        names: list[str] = []
        for name in self.columns:
            spec = self.specs[name]
            if spec["kind"] == "categorical":
                names += [f"{name}={c}" for c in spec["categories"]]
            else:
                names.append(name)
            if spec["missing"]:
                names.append(f"{name}__missing")
        return names

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Table (n rows) -> float32 matrix (n, len(output_names))."""
        blocks = []
        for name in self.columns:
            spec = self.specs[name]
            s = df[name] if name in df else pd.Series([np.nan] * len(df), index=df.index)
            if spec["kind"] == "categorical":
                vals = s.astype("object").where(s.notna(), None)
                block = np.stack([(vals.astype(str) == c).to_numpy() & s.notna().to_numpy()
                                  for c in spec["categories"]], axis=1).astype(np.float32) \
                    if spec["categories"] else np.zeros((len(df), 0), np.float32)
                blocks.append(block)
                miss = s.isna().to_numpy()
            else:
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
                miss = np.isnan(v)
                z = (np.where(miss, spec["mean"], v) - spec["mean"]) / spec["std"]
                blocks.append(z.astype(np.float32)[:, None])
            if spec["missing"]:
                blocks.append(miss.astype(np.float32)[:, None])
        if not blocks:
            return np.zeros((len(df), 0), np.float32)
        return np.concatenate(blocks, axis=1)

    def to_dict(self) -> dict:
        return {"use_case": self.use_case, "columns": self.columns, "specs": self.specs}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        return cls(use_case=d["use_case"], columns=list(d["columns"]), specs=dict(d["specs"]))


def survival_arrays(df: pd.DataFrame, use_case: str, endpoint: str = "os") -> tuple[np.ndarray, np.ndarray]:
    """(durations in months, events 0/1) of an endpoint; shapes (n,)."""
    ep = get_schema(use_case).endpoint(endpoint)
    for col in (ep.time_column, ep.event_column):
        if col not in df:
            raise ValueError(f"endpoint {endpoint!r} needs column {col!r}, not in the table")
    return (df[ep.time_column].to_numpy(dtype=np.float32),
            df[ep.event_column].to_numpy(dtype=np.float32))


def _kind(schema: UseCaseSchema, name: str) -> str:
    try:
        return schema.feature(name).kind
    except KeyError:
        if any(g.matches(name) for g in schema.embeddings):
            return "numeric"
        raise
