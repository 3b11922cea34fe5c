"""The guided "Register a dataset" form: descriptive fields, then the policy the hospital's node
will apply (fl_engine.node.policy). The same validation as the API: the policy through
`validate_policy`, so an error names the field it belongs to."""
from __future__ import annotations

from django import forms

from fl_engine.node import policy as node_policy

PURPOSE_LABELS = {
    "training": "Model training (DeepSurv, SAVAE, Cox)",
    "synthesis": "Synthetic data generation",
    "analysis": "Federated analysis (descriptions, survival curves, Cox)",
}
SENSITIVITY_LABELS = [
    ("general", "General: pseudonymised clinical data under the usual safeguards"),
    ("sensitive", "Sensitive: training only with differential privacy; counts only above "
                  f"{node_policy.SENSITIVE_MIN_CELL_COUNT} patients per cell"),
]
SCOPE_LABELS = [
    ("fine_grained", "Fine-grained: every study needs an explicit approval by the node operator"),
    ("broad", "Broad: any study of this disease and an allowed purpose may use it without a new approval"),
]
POLICY_FORM_FIELDS = ("sensitivity", "consent_scope", "purposes", "require_dp", "min_cell_count", "expires_on")


class RegistrationForm(forms.Form):
    title = forms.CharField(max_length=200, help_text="How clinicians will find it in the catalogue.")
    clinical_description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), max_length=5000, required=False,
        help_text="Who the patients are: diagnosis, setting, selection, follow-up.")
    inclusion_start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                      help_text="First diagnosis date included.")
    inclusion_end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                    help_text="Last diagnosis date included.")
    contact = forms.CharField(max_length=200, help_text="Who answers questions about this dataset (name, e-mail).")
    sensitivity = forms.ChoiceField(choices=SENSITIVITY_LABELS, widget=forms.RadioSelect, initial="general")
    consent_scope = forms.ChoiceField(choices=SCOPE_LABELS, widget=forms.RadioSelect, initial="fine_grained",
                                      label="Consent scope")
    purposes = forms.MultipleChoiceField(choices=list(PURPOSE_LABELS.items()), widget=forms.CheckboxSelectMultiple,
                                         required=False,
                                         initial=list(node_policy.PURPOSES), label="Allowed purposes",
                                         help_text="A study of another purpose cannot use this dataset.")
    require_dp = forms.BooleanField(required=False, label="Require differential privacy (DP-FedAvg) for training")
    min_cell_count = forms.IntegerField(min_value=0, max_value=1000, initial=0, label="Minimum small-cell threshold",
                                        help_text="A run whose small-cell threshold is lower is refused (0 = no minimum).")
    expires_on = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                 label="Policy expires on",
                                 help_text="Valid through that day; from the next day the node refuses the next round.")

    @classmethod
    def initial_from(cls, ds) -> dict:
        pol = ds.policy or node_policy.DEFAULT_POLICY
        return {"title": ds.title or f"{ds.name} ({ds.get_use_case_display()})",
                "clinical_description": ds.clinical_description, "inclusion_start": ds.inclusion_start,
                "inclusion_end": ds.inclusion_end, "contact": ds.contact,
                **{k: pol.get(k) for k in POLICY_FORM_FIELDS}}

    def clean(self):
        data = super().clean()
        start, end = data.get("inclusion_start"), data.get("inclusion_end")
        if start and end and start > end:
            self.add_error("inclusion_end", "Before the inclusion start.")
        if self.errors:
            return data
        raw = {k: data.get(k) for k in POLICY_FORM_FIELDS}
        raw["expires_on"] = raw["expires_on"].isoformat() if raw["expires_on"] else None
        raw["purposes"] = list(raw["purposes"] or [])
        try:
            data["policy"] = node_policy.validate_policy(raw)
        except node_policy.PolicyError as exc:
            for field, reason in exc.problems:
                self.add_error(field if field in self.fields else None, reason)
        if not raw["purposes"]:
            self.add_error("purposes", "Allow at least one purpose, or leave the dataset unregistered.")
        return data

    def registration_data(self) -> tuple[dict, dict]:
        d = self.cleaned_data
        return ({k: d.get(k) if d.get(k) is not None else "" for k in ("title", "clinical_description", "contact")}
                | {"inclusion_start": d.get("inclusion_start"), "inclusion_end": d.get("inclusion_end")},
                d["policy"])
