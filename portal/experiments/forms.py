"""The "Run the experiment grid" form of the comparison page (same service as the API)."""
from __future__ import annotations

from django import forms

from portal.experiments.selectors import cohort_label, released_cohorts
from portal.experiments.services import CASES, FEDERATIONS, LIMITS, MODELS

MODEL_LABELS = {"deepsurv": "DeepSurv (neural Cox model)", "savae": "SAVAE (variational autoencoder, Weibull time)",
                "cox": "Cox proportional hazards (penalised; also the baseline of every grid)"}


def _int_field(name: str, label: str, help_text: str) -> forms.IntegerField:
    lo, hi, default = LIMITS[name]
    return forms.IntegerField(min_value=lo, max_value=hi, initial=default, label=label, help_text=help_text)


class GridStartForm(forms.Form):
    source = forms.ChoiceField(label="Pooled data")
    n = _int_field("n", "Patients (generated cohort)", "Size of the generated MDS cohort.")
    seed = _int_field("seed", "Cohort seed (generated cohort)", "Same seed, same patients.")
    model = forms.ChoiceField(choices=[(m, MODEL_LABELS[m]) for m in MODELS])
    seeds = _int_field("seeds", "Seeds", "Repeats with a different train/test split each (1 to 5).")
    rounds = _int_field("rounds", "Rounds at most", "Federated rounds (epochs for one node); the best round is "
                                                   "chosen on the nodes' hold-out patients.")
    federations = forms.TypedMultipleChoiceField(
        coerce=int, choices=[(3, "3 nodes (60/30/10 %)"), (5, "5 nodes (45/20/15/10/10 %)")],
        initial=list(FEDERATIONS), widget=forms.CheckboxSelectMultiple)
    cases = forms.MultipleChoiceField(
        choices=[("best", "best (every node has every feature group)"),
                 ("worst", "worst (nodes lack feature groups, extra missing values)")],
        initial=list(CASES), widget=forms.CheckboxSelectMultiple)
    isolated = forms.BooleanField(required=False, initial=True, label="Each node isolated too")
    n_boot = _int_field("n_boot", "Bootstrap samples", "For the 95 % intervals on the global test set (0 = none).")

    def __init__(self, *args, study, **kwargs):
        super().__init__(*args, **kwargs)
        choices = []
        if study.use_case == "MDS":
            choices.append(("generated", "Generated MDS cohort (teaching / demonstration)"))
        choices += [(f"cohort-{c.pk}", cohort_label(c).capitalize()) for c in released_cohorts(study)]
        self.fields["source"].choices = choices
        self.fields["model"].initial = study.model_kind

    def service_options(self) -> dict:
        """The cleaned form as keyword arguments of services.start_grid."""
        d = dict(self.cleaned_data)
        source = d.pop("source")
        if source.startswith("cohort-"):
            d.pop("n"), d.pop("seed")
            return {"source": "synthetic", "synthetic_cohort": int(source.split("-", 1)[1]), **d}
        return {"source": "generated", **d}
