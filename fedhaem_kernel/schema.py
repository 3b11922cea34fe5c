"""Feature schemas per use case (MDS, AML, CMML, MM, SCD), shared by the ETL, the models and the
prognostic scores.

One schema names every column of an ML-ready table: its type, unit, allowed range and the
feature group it belongs to (clinical, cytogenetic, genomic, embedding). Survival endpoints are
two columns each: ``<endpoint>_months`` (time from diagnosis, months) and ``<endpoint>_event``
(1 = event observed, 0 = censored).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

SCHEMA_VERSION = "1.0"

# Table-level metadata (``DataFrame.attrs``; Parquet keeps it): the fields a hospital declared
# it never tests (mapping ``{constant: not_tested}``). Their cells are missing, like values
# unknown for one patient, but a score may read a declared-untested lesion by its own rules
# (fl_engine.scores: IPSS-M scenarios, ELN 2022 per lesion). A sorted list of field names.
NOT_TESTED_ATTR = "fedhaem_not_tested"

Kind = Literal["numeric", "binary", "categorical"]
Group = Literal["clinical", "cytogenetic", "genomic", "embedding", "therapy"]


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    group: Group
    description: str
    unit: str = ""  # UCUM where it applies
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    required: bool = False

    def as_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "group": self.group,
            "description": self.description, "unit": self.unit,
            "minimum": self.minimum, "maximum": self.maximum,
            "categories": list(self.categories), "required": self.required,
        }


@dataclass(frozen=True)
class Endpoint:
    name: str
    description: str

    @property
    def time_column(self) -> str:
        return f"{self.name}_months"

    @property
    def event_column(self) -> str:
        return f"{self.name}_event"


@dataclass(frozen=True)
class EmbeddingGroup:
    """A block of numeric columns ``<prefix>_0 .. <prefix>_{dim-1}`` (image or radiomics features)."""
    prefix: str
    description: str
    max_dim: int = 4096

    def columns(self, dim: int) -> list[str]:
        return [f"{self.prefix}_{i}" for i in range(dim)]

    def matches(self, column: str) -> bool:
        head, _, tail = column.rpartition("_")
        return head == self.prefix and tail.isdigit()


@dataclass(frozen=True)
class UseCaseSchema:
    use_case: str
    title: str
    features: tuple[Feature, ...]
    endpoints: tuple[Endpoint, ...]
    embeddings: tuple[EmbeddingGroup, ...] = ()
    version: str = SCHEMA_VERSION
    id_column: str = "patient_id"

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"{self.use_case}: unknown feature {name!r}")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def group(self, group: str) -> list[str]:
        return [f.name for f in self.features if f.group == group]

    @property
    def groups(self) -> list[str]:
        seen: list[str] = []
        for f in self.features:
            if f.group not in seen:
                seen.append(f.group)
        return seen + (["embedding"] if self.embeddings else [])

    def endpoint(self, name: str) -> Endpoint:
        for e in self.endpoints:
            if e.name == name:
                return e
        raise KeyError(f"{self.use_case}: unknown endpoint {name!r}")

    def as_dict(self) -> dict:
        return {
            "use_case": self.use_case, "title": self.title, "version": self.version,
            "id_column": self.id_column,
            "features": [f.as_dict() for f in self.features],
            "endpoints": [{"name": e.name, "description": e.description,
                           "time_column": e.time_column, "event_column": e.event_column,
                           "time_unit": "months"} for e in self.endpoints],
            "embeddings": [{"prefix": g.prefix, "description": g.description} for g in self.embeddings],
        }


def _num(name, group, description, unit, lo, hi, required=False):
    return Feature(name, "numeric", group, description, unit, lo, hi, (), required)


def _bin(name, group, description):
    return Feature(name, "binary", group, description, "", 0, 1)


def _cat(name, group, description, categories, required=False):
    return Feature(name, "categorical", group, description, "", None, None, tuple(categories), required)


def _genes(symbols: Iterable[str]) -> list[Feature]:
    return [_bin(g, "genomic", f"{g} mutated (1) or not (0)") for g in symbols]


_COMMON_CLINICAL = [
    _num("age", "clinical", "Age at diagnosis", "a", 0, 110),
    _cat("sex", "clinical", "Sex at birth", ("F", "M")),
    _num("hb", "clinical", "Haemoglobin", "g/dL", 2, 20),
    _num("plt", "clinical", "Platelet count", "10*9/L", 0, 2000),
    _num("anc", "clinical", "Absolute neutrophil count", "10*9/L", 0, 100),
    _num("wbc", "clinical", "White blood cell count", "10*9/L", 0, 500),
    _num("bm_blast", "clinical", "Bone-marrow blasts", "%", 0, 100),
    _num("pb_blast", "clinical", "Peripheral-blood blasts", "%", 0, 100),
]

# Performance status: ECOG / WHO scale (Oken et al., Am J Clin Oncol 1982), 0 fully active ..
# 4 completely disabled; 5 (dead) is not a baseline value.
_ECOG = _num("ecog", "clinical", "ECOG performance status at diagnosis (0 fully active .. 4 "
             "completely disabled)", "{score}", 0, 4)


def _therapy_related(disease: str) -> Feature:
    return _bin("therapy_related", "clinical", f"Therapy-related {disease}: after cytotoxic "
                "chemotherapy or radiotherapy for another disease")


_EMBEDDINGS = (
    EmbeddingGroup("wsi", "Whole-slide image embedding of the bone-marrow aspirate or biopsy"),
    EmbeddingGroup("radiomics", "Radiomics features from imaging"),
)

IPSSM_GENES = (
    "TP53", "MLL_PTD", "FLT3", "ASXL1", "CBL", "DNMT3A", "ETV6", "EZH2", "IDH2", "KRAS", "NPM1",
    "NRAS", "RUNX1", "SF3B1", "SRSF2", "U2AF1", "BCOR", "BCORL1", "CEBPA", "ETNK1", "GATA2",
    "GNB1", "IDH1", "NF1", "PHF6", "PPM1D", "PRPF8", "PTPN11", "SETBP1", "STAG2", "WT1",
)
MDS_GENES = IPSSM_GENES + ("TET2", "ZRSR2", "JAK2", "CUX1", "DDX41")

CYTO_IPSSR = ("Very Good", "Good", "Intermediate", "Poor", "Very Poor")

MDS = UseCaseSchema(
    use_case="MDS",
    title="Myelodysplastic syndromes",
    features=tuple(_COMMON_CLINICAL + [
        _num("monocytes", "clinical", "Monocyte count", "10*9/L", 0, 100),
        _num("ring_sideroblasts", "clinical", "Ring sideroblasts", "%", 0, 100),
        _ECOG,
        _therapy_related("MDS"),
        _cat("cyto_ipssr", "cytogenetic", "IPSS-R cytogenetic risk group", CYTO_IPSSR),
        _bin("del5q", "cytogenetic", "del(5q)"),
        _bin("del7_7q", "cytogenetic", "-7 or del(7q)"),
        _bin("del17_17p", "cytogenetic", "-17 or del(17p)"),
        _bin("del20q", "cytogenetic", "del(20q)"),
        _bin("plus8", "cytogenetic", "+8"),
        _bin("complex", "cytogenetic", "Complex karyotype (3 or more abnormalities)"),
        _num("tp53_count", "genomic", "Number of TP53 mutations", "1", 0, 10),
        _num("tp53_maxvaf", "genomic", "Largest TP53 variant allele fraction", "1", 0, 1),
        _bin("tp53_loh", "genomic", "TP53 loss of heterozygosity"),
    ] + _genes(MDS_GENES) + [
        _bin("hma", "therapy", "Treated with a hypomethylating agent"),
        _bin("lenalidomide", "therapy", "Treated with lenalidomide"),
        _bin("transplant", "therapy", "Allogeneic stem-cell transplant"),
    ]),
    endpoints=(
        Endpoint("os", "Overall survival"),
        Endpoint("lfs", "Leukaemia-free survival"),
        Endpoint("amlt", "Transformation to AML"),
    ),
    embeddings=_EMBEDDINGS,
)

AML = UseCaseSchema(
    use_case="AML",
    title="Acute myeloid leukaemia",
    features=tuple(_COMMON_CLINICAL + [
        _ECOG,
        _bin("secondary_aml", "clinical", "Secondary AML: progressed from a documented MDS or "
             "MDS/MPN (ICC 2022 diagnostic qualifier)"),
        _therapy_related("AML"),
        _bin("t_15_17", "cytogenetic", "t(15;17)(q24.1;q21.2) PML::RARA: acute promyelocytic "
             "leukaemia (outside ELN 2022 risk groups)"),
        _bin("t_8_21", "cytogenetic", "t(8;21)(q22;q22.1) RUNX1::RUNX1T1"),
        _bin("inv16", "cytogenetic", "inv(16) or t(16;16) CBFB::MYH11"),
        _bin("t_9_11", "cytogenetic", "t(9;11)(p21.3;q23.3) MLLT3::KMT2A"),
        _bin("t_6_9", "cytogenetic", "t(6;9)(p23;q34.1) DEK::NUP214"),
        _bin("kmt2a_r", "cytogenetic", "KMT2A rearrangement other than t(9;11)"),
        _bin("t_9_22", "cytogenetic", "t(9;22)(q34.1;q11.2) BCR::ABL1"),
        _bin("t_8_16", "cytogenetic", "t(8;16)(p11.2;p13.3) KAT6A::CREBBP"),
        _bin("inv3", "cytogenetic", "inv(3) or t(3;3) GATA2, MECOM"),
        _bin("mecom_r", "cytogenetic", "t(3q26.2;v) MECOM (EVI1) rearrangement, not inv(3)/t(3;3)"),
        _bin("del5q", "cytogenetic", "-5 or del(5q)"),
        _bin("del7_7q", "cytogenetic", "-7"),
        _bin("del17_17p", "cytogenetic", "-17 or abn(17p)"),
        _bin("complex", "cytogenetic", "Complex karyotype (3 or more abnormalities)"),
        _bin("monosomal", "cytogenetic", "Monosomal karyotype"),
        _bin("FLT3_ITD", "genomic", "FLT3 internal tandem duplication"),
        _bin("CEBPA_bzip", "genomic", "In-frame bZIP CEBPA mutation"),
    ] + _genes(("NPM1", "TP53", "RUNX1", "ASXL1", "BCOR", "EZH2", "SF3B1", "SRSF2", "STAG2",
                "U2AF1", "ZRSR2", "DNMT3A", "TET2", "IDH1", "IDH2", "NRAS", "KRAS")) + [
        _bin("transplant", "therapy", "Allogeneic stem-cell transplant"),
    ]),
    endpoints=(Endpoint("os", "Overall survival"), Endpoint("efs", "Event-free survival")),
    embeddings=_EMBEDDINGS,
)

CMML = UseCaseSchema(
    use_case="CMML",
    title="Chronic myelomonocytic leukaemia",
    features=tuple(_COMMON_CLINICAL + [
        _num("monocytes", "clinical", "Monocyte count", "10*9/L", 0, 200, required=True),
        _ECOG,
        _therapy_related("CMML"),
        _cat("who_cmml", "clinical", "WHO 2016 subtype", ("CMML-0", "CMML-1", "CMML-2")),
        _bin("rbc_transfusion", "clinical", "Red-cell transfusion dependent"),
        _cat("cyto_cpss", "cytogenetic", "CPSS cytogenetic risk", ("Low", "Intermediate", "High")),
    ] + _genes(("ASXL1", "NRAS", "RUNX1", "SETBP1", "TET2", "SRSF2", "CBL", "KRAS")) + [
        _bin("hma", "therapy", "Treated with a hypomethylating agent"),
        _bin("transplant", "therapy", "Allogeneic stem-cell transplant"),
    ]),
    endpoints=(Endpoint("os", "Overall survival"), Endpoint("amlt", "Transformation to AML")),
    embeddings=_EMBEDDINGS,
)

MM = UseCaseSchema(
    use_case="MM",
    title="Multiple myeloma",
    features=tuple([
        _num("age", "clinical", "Age at diagnosis", "a", 0, 110),
        _cat("sex", "clinical", "Sex at birth", ("F", "M")),
        _num("hb", "clinical", "Haemoglobin", "g/dL", 2, 20),
        _num("plt", "clinical", "Platelet count", "10*9/L", 0, 2000),
        _num("b2m", "clinical", "Serum beta-2 microglobulin", "mg/L", 0, 100),
        _num("albumin", "clinical", "Serum albumin", "g/dL", 0.5, 7),
        _num("ldh", "clinical", "Serum lactate dehydrogenase", "U/L", 0, 10000),
        _num("ldh_uln", "clinical", "Upper limit of normal of the LDH assay", "U/L", 50, 1000),
        _num("creatinine", "clinical", "Serum creatinine", "mg/dL", 0, 30),
        _num("calcium", "clinical", "Serum calcium", "mg/dL", 2, 25),
        _num("bm_plasma", "clinical", "Bone-marrow plasma cells", "%", 0, 100),
        _ECOG,
        _bin("del17p", "cytogenetic", "del(17p) by iFISH"),
        _bin("t_4_14", "cytogenetic", "t(4;14) by iFISH"),
        _bin("t_14_16", "cytogenetic", "t(14;16) by iFISH"),
        _bin("t_14_20", "cytogenetic", "t(14;20) IGH::MAFB by iFISH"),
        _bin("gain1q", "cytogenetic", "gain or amplification of 1q"),
        _bin("del1p", "cytogenetic", "del(1p32) by iFISH"),
    ] + _genes(("KRAS", "NRAS", "TP53", "BRAF", "DIS3", "TRAF3")) + [
        _bin("transplant", "therapy", "Autologous stem-cell transplant"),
    ]),
    endpoints=(Endpoint("os", "Overall survival"), Endpoint("pfs", "Progression-free survival")),
    embeddings=_EMBEDDINGS,
)

# Sickle cell disease: the non-oncological use case (docs/scd.md). SCD is diagnosed at birth or
# in infancy (newborn screening), so ``age`` is the age at baseline (entry into the cohort or
# registry, when the laboratory values are taken: steady state, away from a crisis) and the
# endpoints run from that baseline. Genotypes by HGVS-free clinical names; HbS-beta0-thal is
# clinically like HbSS, HbS-beta+-thal milder.
SCD_GENOTYPES = ("HbSS", "HbSC", "HbS-beta0-thal", "HbS-beta+-thal")

SCD = UseCaseSchema(
    use_case="SCD",
    title="Sickle cell disease",
    features=(
        _num("age", "clinical", "Age at baseline (cohort entry; SCD is diagnosed at birth, so "
             "times run from this visit)", "a", 0, 100),
        _cat("sex", "clinical", "Sex at birth", ("F", "M")),
        _cat("genotype", "clinical", "Sickle genotype (HBB): HbSS, HbSC, HbS/beta0-thalassaemia or "
             "HbS/beta+-thalassaemia", SCD_GENOTYPES),
        _num("hbf", "clinical", "Fetal haemoglobin, % of total haemoglobin (steady state)", "%", 0, 60),
        _num("hb", "clinical", "Haemoglobin (steady state)", "g/dL", 2, 20),
        _num("retic", "clinical", "Reticulocytes, % of red cells (not the absolute count)", "%", 0, 60),
        _num("ldh", "clinical", "Serum lactate dehydrogenase", "U/L", 0, 10000),
        _num("bilirubin", "clinical", "Total serum bilirubin", "mg/dL", 0, 50),
        _num("wbc", "clinical", "White blood cell count (steady state)", "10*9/L", 0, 100),
        _num("voc_per_year", "clinical", "Vaso-occlusive crises needing medical care, per year "
             "(the 12 months before baseline)", "/a", 0, 50),
        _bin("acs_history", "clinical", "Acute chest syndrome ever, before baseline"),
        _bin("stroke_history", "clinical", "Overt ischaemic or haemorrhagic stroke ever, before baseline"),
        _num("tcd_velocity", "clinical", "Transcranial Doppler time-averaged mean of the maximum "
             "velocity, highest of the intracranial arteries (children 2-16 years; >= 200 cm/s "
             "abnormal)", "cm/s", 0, 400),
        _bin("hydroxyurea", "therapy", "Taking hydroxyurea (hydroxycarbamide) at baseline"),
        _bin("chronic_transfusion", "therapy", "On a chronic red-cell transfusion or exchange programme "
             "at baseline"),
    ),
    endpoints=(
        Endpoint("os", "Overall survival"),
        Endpoint("sev", "Time to the first severe event: overt stroke, acute chest syndrome needing "
                 "intensive care, or death from any cause"),
    ),
)

SCHEMAS: dict[str, UseCaseSchema] = {s.use_case: s for s in (MDS, AML, CMML, MM, SCD)}


def get_schema(use_case: str) -> UseCaseSchema:
    """The schema of a use case by its code (MDS, AML, CMML, MM, SCD), case-insensitive."""
    try:
        return SCHEMAS[use_case.upper()]
    except KeyError:
        raise KeyError(f"unknown use case {use_case!r}; known: {', '.join(SCHEMAS)}") from None
