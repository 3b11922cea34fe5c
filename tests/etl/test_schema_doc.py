"""docs/schema.md is generated from the schema and the scores: this fails when the checked-in file
is stale, and checks the scores' column against what each score declares it reads."""
from fedhaem_kernel.schema import SCHEMAS
from etl.schema_doc import DOC_PATH
from fl_engine.scores import mds
from fl_engine.scores.schema_doc import render
from fl_engine.scores.usage import score_inputs, used_by


def test_docs_schema_md_is_current():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/schema.md is stale: run `python -m fl_engine.scores.schema_doc --write` and commit it")


def test_every_field_of_every_use_case_is_listed():
    text = render()
    for uc, schema in SCHEMAS.items():
        section = text.split(f"## {uc}:", 1)[1].split("\n## ", 1)[0]
        for f in schema.features:
            assert f"| `{f.name}` | {f.kind} |" in section, (uc, f.name)
        for e in schema.endpoints:
            assert f"`{e.time_column}` (months)" in section


def test_the_scores_found_reading_a_field_are_the_ones_that_declare_it():
    found = score_inputs("MDS")
    assert set(found["IPSS-R"]) == set(mds.IPSSR_INPUTS)
    assert set(found["IPSS-M"]) == set(mds.IPSSM_INPUTS)
    assert set(score_inputs("MM")["ISS"]) == {"b2m", "albumin"}
    aml = used_by("AML")
    assert aml["TP53"] == ("ELN 2022",) and aml["t_15_17"] == ("ELN 2022",)  # APL: scored apart
    assert "age" not in aml and "ecog" not in aml  # ELN 2022 is genetic only
    assert set(score_inputs("CMML")) == {"CPSS", "CPSS-Mol"}
    row = next(l for l in render().split("## MDS:", 1)[1].splitlines() if l.startswith("| `hb` |"))
    assert "IPSS-M, IPSS-R" in row
