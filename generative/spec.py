"""Table specification shared by every generator and by the SAFE validation.

A :class:`TableSpec` names each column of a patient table, its kind (numeric, binary,
categorical), its feature group (clinical, cytogenetic, genomic, therapy, survival) and a few
modelling hints (log scale, integer values). It is public knowledge (it comes from the use-case
schema in ``fedhaem_kernel.schema``), so every node and the manager hold the same spec before any
data moves. Survival endpoints are two columns: a duration in months and an event flag
(1 = event, 0 = censored).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Literal

import numpy as np
import pandas as pd

Kind = Literal["numeric", "binary", "categorical"]
GROUPS = ("clinical", "cytogenetic", "genomic", "therapy", "survival")


class SpecError(ValueError):
    """A table does not match its spec; the message names the column, the row and the reason."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    group: str = "clinical"
    categories: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    log: bool = False  # model log1p(x - minimum): labs such as WBC or platelets are right-skewed
    integer: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "group": self.group,
                "categories": list(self.categories), "minimum": self.minimum,
                "maximum": self.maximum, "log": self.log, "integer": self.integer}

    @staticmethod
    def from_dict(d: dict) -> "ColumnSpec":
        return ColumnSpec(d["name"], d["kind"], d.get("group", "clinical"),
                          tuple(d.get("categories", ())), d.get("minimum"), d.get("maximum"),
                          bool(d.get("log", False)), bool(d.get("integer", False)))


@dataclass(frozen=True)
class TableSpec:
    columns: tuple[ColumnSpec, ...]
    duration: str | None = None  # survival time column, months
    event: str | None = None  # 1 = event observed, 0 = censored
    quasi_identifiers: tuple[str, ...] = ()  # columns an attacker could know (privacy tests)

    def __post_init__(self):
        names = [c.name for c in self.columns]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SpecError(f"spec: duplicated column names {sorted(dup)}")
        for c in self.columns:
            if c.kind not in ("numeric", "binary", "categorical"):
                raise SpecError(f"spec: column {c.name!r} has unknown kind {c.kind!r}")
            if c.kind == "categorical" and len(c.categories) < 1:
                raise SpecError(f"spec: categorical column {c.name!r} lists no categories")
        for role, col in (("duration", self.duration), ("event", self.event)):
            if col is not None and col not in names:
                raise SpecError(f"spec: {role} column {col!r} is not among the columns")
        for q in self.quasi_identifiers:
            if q not in names:
                raise SpecError(f"spec: quasi-identifier {q!r} is not among the columns")

    # ----- lookups
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"spec: unknown column {name!r}")

    def of_kind(self, *kinds: str) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind in kinds]

    def of_group(self, *groups: str) -> list[ColumnSpec]:
        return [c for c in self.columns if c.group in groups]

    @property
    def genes(self) -> list[str]:
        return [c.name for c in self.columns if c.group == "genomic" and c.kind == "binary"]

    def as_dict(self) -> dict:
        return {"columns": [c.as_dict() for c in self.columns], "duration": self.duration,
                "event": self.event, "quasi_identifiers": list(self.quasi_identifiers)}

    @staticmethod
    def from_dict(d: dict) -> "TableSpec":
        return TableSpec(tuple(ColumnSpec.from_dict(c) for c in d["columns"]), d.get("duration"),
                         d.get("event"), tuple(d.get("quasi_identifiers", ())))

    # ----- construction
    @staticmethod
    def infer(df: pd.DataFrame, *, duration: str | None = None, event: str | None = None,
              genomic: Iterable[str] = (), log: Iterable[str] = (),
              quasi_identifiers: Iterable[str] = (), max_categories: int = 20) -> "TableSpec":
        """Guess a spec from a (test or public) table: 0/1 columns are binary, text columns
        categorical, the rest numeric. Use on data you may look at, not across nodes."""
        genomic, log = set(genomic), set(log)
        cols = []
        for name in df.columns:
            s = df[name]
            group = "genomic" if name in genomic else "clinical"
            if name in (duration, event):
                group = "survival"
            if s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s):
                cats = tuple(sorted(map(str, s.dropna().unique())))
                if len(cats) > max_categories:
                    raise SpecError(f"column {name!r}: {len(cats)} categories (> {max_categories})")
                cols.append(ColumnSpec(name, "categorical", group, cats))
            elif set(pd.unique(s.dropna())) <= {0, 1, True, False}:
                cols.append(ColumnSpec(name, "binary", group))
            else:
                v = s.astype(float).to_numpy()
                integer = bool(np.all(np.isclose(v[~np.isnan(v)] % 1, 0)))
                cols.append(ColumnSpec(name, "numeric", group, (), float(np.nanmin(v)),
                                       float(np.nanmax(v)), name in log, integer))
        return TableSpec(tuple(cols), duration, event, tuple(quasi_identifiers))

    @staticmethod
    def from_schema(schema, columns: Iterable[str], endpoint: str | None = None,
                    log: Iterable[str] = (), quasi_identifiers: Iterable[str] = ()) -> "TableSpec":
        """Build a spec from an ``fedhaem_kernel.schema.UseCaseSchema`` for the chosen feature
        columns, plus the endpoint's ``<endpoint>_months`` / ``<endpoint>_event`` columns."""
        log = set(log)
        cols = []
        for name in columns:
            f = schema.feature(name)
            cols.append(ColumnSpec(f.name, f.kind, f.group, tuple(f.categories), f.minimum,
                                   f.maximum, f.name in log))
        dur = ev = None
        if endpoint is not None:
            e = schema.endpoint(endpoint)
            dur, ev = e.time_column, e.event_column
            cols.append(ColumnSpec(dur, "numeric", "survival", (), 0.0, None, dur in log))
            cols.append(ColumnSpec(ev, "binary", "survival"))
        return TableSpec(tuple(cols), dur, ev, tuple(quasi_identifiers))

    def with_ranges(self, df: pd.DataFrame) -> "TableSpec":
        """Copy with numeric min/max filled from ``df`` where the spec leaves them open."""
        cols = []
        for c in self.columns:
            if c.kind == "numeric":
                v = df[c.name].astype(float)
                lo = c.minimum if c.minimum is not None else float(v.min())
                hi = c.maximum if c.maximum is not None else float(v.max())
                c = replace(c, minimum=lo, maximum=hi)
            cols.append(c)
        return replace(self, columns=tuple(cols))

    # ----- validation
    def validate(self, df: pd.DataFrame, where: str = "table") -> pd.DataFrame:
        """Check ``df`` against the spec and return it with canonical dtypes (float numeric,
        int binary, str categorical), columns in spec order. Raises :class:`SpecError`."""
        if not isinstance(df, pd.DataFrame):
            raise SpecError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
        missing = [n for n in self.names if n not in df.columns]
        if missing:
            raise SpecError(f"{where}: missing columns {missing}")
        if len(df) == 0:
            raise SpecError(f"{where}: no rows")
        out = {}
        for c in self.columns:
            s = df[c.name]
            na = s.isna().to_numpy()
            if na.any():
                row = int(np.flatnonzero(na)[0])
                raise SpecError(f"{where}: column {c.name!r}, row {row}: missing value "
                                f"({int(na.sum())} in total; generators need complete rows, "
                                "impute first)")
            if c.kind == "numeric":
                try:
                    v = pd.to_numeric(s, errors="raise").astype(float).to_numpy()
                except (ValueError, TypeError):
                    bad = pd.to_numeric(s, errors="coerce").isna().to_numpy()
                    row = int(np.flatnonzero(bad)[0])
                    raise SpecError(f"{where}: column {c.name!r}, row {row}: "
                                    f"{s.iloc[row]!r} is not a number") from None
                checks = []
                if c.minimum is not None:
                    checks.append((c.minimum, v < c.minimum, "below minimum"))
                if c.maximum is not None:
                    checks.append((c.maximum, v > c.maximum, "above maximum"))
                for bound, test, label in checks:
                    if test.any():
                        row = int(np.flatnonzero(test)[0])
                        raise SpecError(f"{where}: column {c.name!r}, row {row}: value {v[row]} "
                                        f"{label} {bound}")
                out[c.name] = v
            elif c.kind == "binary":
                v = pd.to_numeric(s, errors="coerce").to_numpy()
                bad = ~np.isin(v, (0, 1))
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise SpecError(f"{where}: column {c.name!r}, row {row}: {s.iloc[row]!r} "
                                    "is not 0 or 1")
                out[c.name] = v.astype(np.int64)
            else:
                v = s.astype(str).to_numpy()
                bad = ~np.isin(v, list(c.categories))
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise SpecError(f"{where}: column {c.name!r}, row {row}: category {v[row]!r} "
                                    f"not in {list(c.categories)}")
                out[c.name] = v.astype(object)
        return pd.DataFrame(out, index=pd.RangeIndex(len(df)))
