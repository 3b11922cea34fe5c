"""AML genetic risk by ELN 2022 (Döhner et al., Blood 2022;140:1345, Table 6).

Inputs use ``fedhaem_kernel.schema.AML`` binary columns (1 present, 0 absent, NaN unknown).
TP53 = 1 is read as a TP53 mutation at VAF >= 10% (the ELN 2022 threshold): the ETL should set
it accordingly. t(8;16) KAT6A::CREBBP (``t_8_16``) and t(3q26.2;v) MECOM rearrangement
(``mecom_r``) joined the AML schema after the other lesions, so ML-ready tables made before then
lack the columns: such a table is still scored, the lesions taken as absent and every row saying
so in ``eln2022_note``. A present column with NaN is unknown, like any other input.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import as_frame, binary, require, shape_output

ELN2022_CATEGORIES = ("Favorable", "Intermediate", "Adverse")

OPTIONAL_ADVERSE = ("t_8_16", "mecom_r")  # absent from older tables: see module docstring
ADVERSE_CYTOGENETICS = ("t_6_9", "kmt2a_r", "t_9_22", "inv3", "del5q", "del7_7q", "del17_17p",
                        "complex", "monosomal") + OPTIONAL_ADVERSE
MYELODYSPLASIA_GENES = ("ASXL1", "BCOR", "EZH2", "RUNX1", "SF3B1", "SRSF2", "STAG2", "U2AF1",
                        "ZRSR2")
ELN2022_INPUTS = (("t_8_21", "inv16", "t_9_11") + ADVERSE_CYTOGENETICS
                  + ("TP53", "NPM1", "FLT3_ITD", "CEBPA_bzip") + MYELODYSPLASIA_GENES)
ELN2022_REQUIRED = tuple(c for c in ELN2022_INPUTS if c not in OPTIONAL_ADVERSE)

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


def eln2022(data):
    """ELN 2022 genetic risk group (Favorable / Intermediate / Adverse) per patient.

    data: DataFrame (one row per patient) or one-patient dict with ``ELN2022_INPUTS`` (0/1/NaN).
    ``OPTIONAL_ADVERSE`` columns may be absent (then taken as absent lesions, said in
    eln2022_note). Returns eln2022_cat, eln2022_rule (the rule that decided), eln2022_missing
    (NaN category when an unknown field could change the decision; the fields are named) and
    eln2022_note.
    """
    df, single = as_frame(data)
    name = "ELN 2022"
    require(df, ELN2022_REQUIRED, name)
    absent = [c for c in OPTIONAL_ADVERSE if c not in df.columns]
    v = {c: (binary(df, c, name).to_numpy() if c in df.columns else np.zeros(len(df)))
         for c in ELN2022_INPUTS}
    note = (", ".join(absent) + " not in the input: taken as absent") if absent else ""
    n = len(df)
    cats = np.full(n, np.nan, dtype=object)
    rules = [""] * n
    missing = [""] * n
    for i in range(n):
        for rule, fields, cat in _RULES:
            vals = [v[f][i] for f in fields]
            if any(x == 1 for x in vals):
                if cat is None:  # mutated NPM1: favourable without FLT3-ITD
                    itd = v["FLT3_ITD"][i]
                    if np.isnan(itd):
                        missing[i] = "missing: FLT3_ITD"
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
                missing[i] = "missing: " + ", ".join(unknown)
                rules[i] = f"cannot tell: {rule}"
                break
        else:
            # no favourable or adverse lesion: intermediate whatever FLT3-ITD is
            itd = v["FLT3_ITD"][i]
            cats[i] = "Intermediate"
            rules[i] = ("FLT3-ITD without adverse-risk lesions" if itd == 1 else
                        "not classified as favorable or adverse")
    out = pd.DataFrame({"eln2022_cat": cats, "eln2022_rule": rules, "eln2022_missing": missing,
                        "eln2022_note": note}, index=df.index)
    return shape_output(out, single)
