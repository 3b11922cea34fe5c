"""docs/schema.md is generated from the schema: this fails when the checked-in file is stale."""
from etl.schema_doc import DOC_PATH, render
from fedhaem_kernel.schema import SCHEMAS


def test_docs_schema_md_is_current():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/schema.md is stale: run `python -m etl.schema_doc --write` and commit it")


def test_every_field_of_every_use_case_is_listed():
    text = render()
    for uc, schema in SCHEMAS.items():
        section = text.split(f"## {uc}:", 1)[1].split("\n## ", 1)[0]
        for f in schema.features:
            assert f"| `{f.name}` | {f.kind} |" in section, (uc, f.name)
        for e in schema.endpoints:
            assert f"`{e.time_column}` (months)" in section
