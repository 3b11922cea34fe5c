import pandas as pd
import pytest

from generative import SpecError, TableSpec


def test_validate_names_column_row_and_reason(spec, cohort):
    bad = cohort.copy()
    bad.loc[5, "hb"] = None
    with pytest.raises(SpecError, match=r"column 'hb', row 5: missing value"):
        spec.validate(bad)
    bad = cohort.copy()
    bad["SF3B1"] = bad["SF3B1"].astype(object)
    bad.loc[7, "SF3B1"] = 2
    with pytest.raises(SpecError, match=r"column 'SF3B1', row 7: 2 is not 0 or 1"):
        spec.validate(bad)
    bad = cohort.copy()
    bad.loc[3, "cyto_ipssr"] = "Awful"
    with pytest.raises(SpecError, match=r"column 'cyto_ipssr', row 3: category 'Awful'"):
        spec.validate(bad)
    with pytest.raises(SpecError, match=r"missing columns \['os_event'\]"):
        spec.validate(cohort.drop(columns="os_event"))


def test_spec_round_trips_through_json_dict(spec):
    assert TableSpec.from_dict(spec.as_dict()) == spec


def test_infer_guesses_kinds(cohort):
    s = TableSpec.infer(cohort, duration="os_months", event="os_event", genomic=["TP53"])
    assert s.column("sex").kind == "categorical"
    assert s.column("TP53").kind == "binary" and s.column("TP53").group == "genomic"
    assert s.column("hb").kind == "numeric"
    assert s.column("os_event").group == "survival"


def test_from_fl_engine_schema():
    from fedhaem_kernel.schema import MDS

    s = TableSpec.from_schema(MDS, ["age", "sex", "hb", "TP53", "cyto_ipssr"], endpoint="os")
    assert s.duration == "os_months" and s.event == "os_event"
    assert s.column("cyto_ipssr").categories[0] == "Very Good"
    df = pd.DataFrame({"age": [70], "sex": ["M"], "hb": [9.0], "TP53": [1], "cyto_ipssr": ["Good"],
                       "os_months": [12.0], "os_event": [1]})
    assert s.validate(df).shape == (1, 7)
