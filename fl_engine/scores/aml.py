"""AML genetic risk by ELN 2022 (Döhner et al., Blood 2022;140:1345, Table 6).

Inputs use ``fedhaem_kernel.schema.AML`` binary columns (1 present, 0 absent, NaN unknown).
TP53 = 1 is read as a TP53 mutation at VAF >= 10% (the ELN 2022 threshold): the ETL should set
it accordingly.

Who is not scored. Acute promyelocytic leukaemia (t(15;17) PML::RARA, ``t_15_17`` = 1) has its
own risk model (Sanz) and is outside the ELN 2022 genetic risk groups: such a patient gets no
category, ``eln2022_excluded`` says why, and a coverage count leaves them out of "computable".
Secondary AML (after MDS or MDS/MPN) and therapy-related AML are scored on their genetics like
any AML: in ELN 2022 and the ICC 2022 these are diagnostic qualifiers, not risk groups (the
myelodysplasia-related gene mutations carry their adverse risk); ``eln2022_note`` says so.

Lesions a hospital never tests (declared ``not_tested`` in its mapping, reaching the scorer as
the table's ``fedhaem_kernel.schema.NOT_TESTED_ATTR`` or the ``not_tested`` argument), decided
per lesion:

- Cytogenetic lesions (``KARYOTYPE_LESIONS``: every rearrangement, monosomy and deletion of
  Table 6, and t(15;17)) are read from the conventional karyotype that ELN 2022 requires at
  diagnosis (Table 3). A hospital that does not export one of them as its own field still read
  it on the karyotype: for a patient whose karyotype was read (``complex`` known, 0 or 1) the
  lesion is taken as absent, and ``eln2022_note`` names it. Cryptic rearrangements seen only by
  RT-PCR or FISH are the limit of that karyotype. Without a read karyotype (``complex`` unknown
  or itself not tested) the lesion stays unknown.
- Gene mutations (``GENE_LESIONS``: NPM1, FLT3-ITD, bZIP CEBPA, TP53 and the nine
  myelodysplasia-related genes) are tests ELN 2022 requires at diagnosis and no other test
  reveals: never taken as absent. Not tested is unknown; the patient is still scored when the
  lesion cannot change the group (core-binding-factor AML, adverse cytogenetics ...), else not
  computable, and ``eln2022_missing`` names the lesions (``(not tested)`` after a declared one).
- A column absent from the table (tables made before ``t_8_16``, ``mecom_r`` and ``t_15_17``
  joined the schema) is read as declared not tested.

A lesion unknown for one patient (an empty cell, not declared) is unknown: the patient is
scored only when it cannot change the group, and counted as not computable otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedhaem_kernel.schema import NOT_TESTED_ATTR

from ._common import as_frame, binary, require, shape_output

ELN2022_CATEGORIES = ("Favorable", "Intermediate", "Adverse")

OPTIONAL_COLUMNS = ("t_15_17", "t_8_16", "mecom_r")  # absent from older tables: docstring
OPTIONAL_ADVERSE = ("t_8_16", "mecom_r")
ADVERSE_CYTOGENETICS = ("t_6_9", "kmt2a_r", "t_9_22", "inv3", "del5q", "del7_7q", "del17_17p",
                        "complex", "monosomal") + OPTIONAL_ADVERSE
MYELODYSPLASIA_GENES = ("ASXL1", "BCOR", "EZH2", "RUNX1", "SF3B1", "SRSF2", "STAG2", "U2AF1",
                        "ZRSR2")
ELN2022_INPUTS = (("t_15_17", "t_8_21", "inv16", "t_9_11") + ADVERSE_CYTOGENETICS
                  + ("TP53", "NPM1", "FLT3_ITD", "CEBPA_bzip") + MYELODYSPLASIA_GENES)
ELN2022_REQUIRED = tuple(c for c in ELN2022_INPUTS if c not in OPTIONAL_COLUMNS)
# Read on the conventional karyotype: declared not tested -> absent when the karyotype was read
KARYOTYPE_LESIONS = ("t_15_17", "t_8_21", "inv16", "t_9_11", "t_6_9", "kmt2a_r", "t_9_22",
                     "t_8_16", "inv3", "mecom_r", "del5q", "del7_7q", "del17_17p", "monosomal")
KARYOTYPE_READ = "complex"  # known only when a conventional karyotype was read
# Required molecular tests: not tested stays unknown
GENE_LESIONS = ("TP53", "NPM1", "FLT3_ITD", "CEBPA_bzip") + MYELODYSPLASIA_GENES
APL_REASON = "APL t(15;17) PML::RARA: outside ELN 2022 risk groups"
_QUALIFIERS = (("secondary_aml", "secondary AML"), ("therapy_related", "therapy-related AML"))

# (rule, fields any of which makes it true, category). Applied in order; the first true rule
# decides. The order encodes the table's footnotes: core-binding-factor AML is favourable
# whatever else is present; NPM1-mutated AML with adverse cytogenetics is adverse; t(9;11)
# takes precedence over rare concurrent adverse gene mutations; myelodysplasia-related gene
# mutations are not adverse in favourable subtypes (mutated NPM1, bZIP CEBPA) and, like
# FLT3-ITD, do not move mutated NPM1 with FLT3-ITD out of intermediate.
_RULES = (
    ("core-binding-factor t(8;21) or inv(16)/t(16;16)", ("t_8_21", "inv16"), "Favorable"),
    ("adverse-risk cytogenetics", ADVERSE_CYTOGENETICS, "Adverse"),
    ("t(9;11)(p21.3;q23.3) MLLT3::KMT2A", ("t_9_11",), "Intermediate"),
    ("mutated TP53 (VAF >= 10%)", ("TP53",), "Adverse"),
    ("mutated NPM1", ("NPM1",), None),  # resolved by FLT3-ITD below
    ("in-frame bZIP CEBPA mutation", ("CEBPA_bzip",), "Favorable"),
    ("myelodysplasia-related gene mutation", MYELODYSPLASIA_GENES, "Adverse"),
)


def declared_not_tested(df: pd.DataFrame, not_tested=None) -> frozenset[str]:
    """The fields declared never tested: `not_tested` when given, else the table's
    ``NOT_TESTED_ATTR`` (set by the ETL from the mapping; empty when absent)."""
    if not_tested is None:
        not_tested = df.attrs.get(NOT_TESTED_ATTR, ()) if hasattr(df, "attrs") else ()
    if isinstance(not_tested, str):
        raise TypeError("not_tested: a list of field names, not one string")
    return frozenset(str(x) for x in not_tested)


def eln2022(data, *, not_tested=None):
    """ELN 2022 genetic risk group (Favorable / Intermediate / Adverse) per patient.

    data: DataFrame (one row per patient) or one-patient dict with ``ELN2022_INPUTS`` (0/1/NaN).
    not_tested: fields the hospital never tests (default: the table's NOT_TESTED_ATTR); read
    per lesion as the module docstring says; ``OPTIONAL_COLUMNS`` may be absent (then read as
    not tested). Returns eln2022_cat, eln2022_rule (the rule that decided), eln2022_missing
    (NaN category when an unknown field could change the decision; the fields are named),
    eln2022_excluded (why ELN 2022 does not apply, e.g. APL; NaN category) and eln2022_note
    (lesions taken as absent, diagnostic qualifiers).
    """
    df, single = as_frame(data)
    name = "ELN 2022"
    require(df, ELN2022_REQUIRED, name)
    declared = declared_not_tested(df, not_tested) | {c for c in OPTIONAL_COLUMNS
                                                      if c not in df.columns}
    n = len(df)
    v = {c: (binary(df, c, name).to_numpy() if c in df.columns else np.full(n, np.nan))
         for c in ELN2022_INPUTS}
    for c in declared & set(ELN2022_INPUTS):
        v[c] = np.full(n, np.nan)  # a declared column holds nothing to read, whatever its cells
    karyotype_read = ~np.isnan(v[KARYOTYPE_READ])
    assumed = [[] for _ in range(n)]
    for c in KARYOTYPE_LESIONS:
        if c in declared:
            for i in np.flatnonzero(karyotype_read):
                v[c][i] = 0.0
                assumed[i].append(c)
    qualifiers = {q: (binary(df, q, name).to_numpy() if q in df.columns else np.full(n, np.nan))
                  for q, _ in _QUALIFIERS}

    def unknown_label(f: str) -> str:
        return f"{f} (not tested)" if f in declared else f

    cats = np.full(n, np.nan, dtype=object)
    rules = [""] * n
    missing = [""] * n
    excluded = [""] * n
    for i in range(n):
        apl = v["t_15_17"][i]
        if apl == 1:
            excluded[i] = APL_REASON
            rules[i] = "not scored: " + APL_REASON
            continue
        if np.isnan(apl):
            missing[i] = "missing: " + unknown_label("t_15_17")
            rules[i] = "cannot tell: APL t(15;17) PML::RARA"
            continue
        for rule, fields, cat in _RULES:
            vals = [v[f][i] for f in fields]
            if any(x == 1 for x in vals):
                if cat is None:  # mutated NPM1: favourable without FLT3-ITD
                    itd = v["FLT3_ITD"][i]
                    if np.isnan(itd):
                        missing[i] = "missing: " + unknown_label("FLT3_ITD")
                        rules[i] = "mutated NPM1, FLT3-ITD unknown"
                        break
                    cat = "Intermediate" if itd == 1 else "Favorable"
                    rule = "mutated NPM1 with FLT3-ITD" if itd == 1 else \
                        "mutated NPM1 without FLT3-ITD"
                cats[i] = cat
                rules[i] = rule
                break
            unknown = [f for f, x in zip(fields, vals) if np.isnan(x)]
            if unknown:
                missing[i] = "missing: " + ", ".join(unknown_label(f) for f in unknown)
                rules[i] = f"cannot tell: {rule}"
                break
        else:
            # no favourable or adverse lesion: intermediate whatever FLT3-ITD is
            itd = v["FLT3_ITD"][i]
            cats[i] = "Intermediate"
            rules[i] = ("FLT3-ITD without adverse-risk lesions" if itd == 1 else
                        "not classified as favorable or adverse")
    notes = []
    for i in range(n):
        parts = []
        if assumed[i]:
            parts.append(", ".join(assumed[i]) + " not tested separately: taken as absent on the "
                         "read karyotype")
        quals = [label for q, label in _QUALIFIERS if qualifiers[q][i] == 1]
        if quals and not excluded[i]:
            parts.append(" and ".join(quals) + ": scored on genetics (a diagnostic qualifier in "
                         "ELN 2022 / ICC 2022, not a risk group)")
        notes.append("; ".join(parts))
    out = pd.DataFrame({"eln2022_cat": cats, "eln2022_rule": rules, "eln2022_missing": missing,
                        "eln2022_excluded": excluded, "eln2022_note": notes}, index=df.index)
    return shape_output(out, single)
