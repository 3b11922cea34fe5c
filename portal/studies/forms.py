"""The guided study form: the same rules as the API serializer (hyper-parameters through
`validate_hyperparameters`, datasets through `dataset_compatibility_errors`), errors next to
the field that caused them."""
from __future__ import annotations

from django import forms
from pydantic import ValidationError as PydanticError

from fl_engine.models.params import field_bounds
from fedhaem_kernel.schema import SCHEMAS
from fl_engine.analytics.settings import validate_analysis
from fl_engine.federation.privacy import DEFAULT_RUN_DELTA, dp_fedavg_epsilon
from fl_engine.node.budget import DEFAULT_EPSILON_BUDGET
from portal.core.choices import UseCase
from portal.datasets.models import Dataset
from portal.studies.config import (MIN_NODES, ROUNDS, DESCRIPTION_MAX, PARAMS_BY_KIND, PrivacyOptions, default_privacy,
                                   model_privacy_error, validate_hyperparameters)
from portal.studies.models import Study
from portal.studies.selectors import dataset_compatibility_errors

GROUP_LABELS = [
    ("clinical", "Clinical (age, sex, blood counts, marrow blasts)"),
    ("cytogenetic", "Cytogenetic (karyotype risk, abnormalities)"),
    ("genomic", "Genomic (gene mutations)"),
    ("embedding", "Embeddings (image / radiomics feature vectors)"),
    ("therapy", "Therapy (treatment received)"),
]

_ENDPOINTS = {
    "os": "Overall survival (OS)", "lfs": "Leukaemia-free survival (LFS)",
    "amlt": "Time to AML transformation", "efs": "Event-free survival (EFS)",
    "pfs": "Progression-free survival (PFS)", "sev": "Time to the first severe event (SEV)",
}
ENDPOINT_CHOICES = [(k, v) for k, v in _ENDPOINTS.items()]

# Form field -> (hyper-parameter name, model kinds using it)
HP_FIELDS = {
    "hp_hidden_layers": ("hidden", ("deepsurv",)),
    "hp_hidden_units": ("hidden", ("savae",)),
    "hp_latent_dim": ("latent_dim", ("savae",)),
    "hp_dropout": ("dropout", ("deepsurv", "savae")),
    "hp_lr": ("lr", ("deepsurv", "savae")),
    "hp_weight_decay": ("weight_decay", ("deepsurv",)),
    "hp_batch_size": ("batch_size", ("deepsurv", "savae")),
    "hp_local_epochs": ("local_epochs", ("deepsurv", "savae")),
}

# Form field -> privacy option (portal.studies.config.PrivacyOptions)
PRIVACY_FIELDS = {
    "priv_min_patients": "min_patients_per_node",
    "priv_min_cell": "min_cell_count",
    "priv_dp_enabled": "dp_enabled",
    "priv_dp_clip_norm": "dp_clip_norm",
    "priv_dp_noise": "dp_noise_multiplier",
}
_PRIVACY_DEFAULTS = default_privacy()

# Form field -> analysis setting (fl_engine.analytics.settings; the engine validates and fills in
# the defaults of the use case). Lists are typed comma-separated; empty = the use case's default.
ANALYSIS_FIELDS = {
    "an_analyses": "analyses", "an_group_by": "group_by", "an_numeric": "numeric",
    "an_categorical": "categorical", "an_covariates": "covariates", "an_cox_stratified": "cox_stratified",
    "an_time_step": "time_step_months",
}
ANALYSIS_LISTS = ("an_numeric", "an_categorical", "an_covariates")
ANALYSIS_CHOICES = [("describe", "Cohort description (counts, missingness, means, quantiles, categories)"),
                    ("km", "Kaplan-Meier curves with the number at risk and median survival"),
                    ("logrank", "Log-rank test between the groups (and stratified by hospital)"),
                    ("cox", "Exact federated Cox model (hazard ratios, forest plot)")]


def _number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _range_text(b: dict) -> str:
    lo = (f"more than {_number(b['exclusiveMinimum'])}" if "exclusiveMinimum" in b
          else f"{_number(b['minimum'])}" if "minimum" in b else "")
    hi = (f"below {_number(b['exclusiveMaximum'])}" if "exclusiveMaximum" in b
          else f"{_number(b['maximum'])}" if "maximum" in b else "")
    if lo and hi:
        return f"{lo}, at most {hi}" if lo.startswith("more") else f"{lo} to {hi}"
    return lo or hi


def _show_bounds(field: forms.Field, b: dict) -> None:
    """Say a hyper-parameter's bounds (from the model's spec, fl_engine.models.params) in the
    field's hint and as HTML min/max; the spec itself is what validates."""
    if "items" in b:
        text = f"{b.get('minItems', 1)} to {b['maxItems']} layers of {_range_text(b['items'])} units each."
    else:
        text = _range_text(b)
        text = f"{text[0].upper()}{text[1:]}." if text.startswith("more") else f"From {text}."
        if "minimum" in b:
            field.widget.attrs.setdefault("min", b["minimum"])
        if "maximum" in b:
            field.widget.attrs.setdefault("max", b["maximum"])
        if isinstance(field, forms.FloatField):
            field.widget.attrs["step"] = "any"
    field.help_text = f"{field.help_text} {text}".strip()


def dataset_label(ds: Dataset) -> str:
    return (f"{ds.node.organisation.name} · node {ds.node.name} · {ds.name} v{ds.version} · "
            f"{ds.use_case} · {ds.patient_count} patients")


def dataset_groups(ds: Dataset) -> list[str]:
    """Feature groups the dataset's schema carries (for the form's filtering)."""
    schema = SCHEMAS.get(ds.use_case)
    present = set(ds.feature_schema or [])
    if schema is None:
        return []
    groups = [g for g in ("clinical", "cytogenetic", "genomic", "therapy")
              if any(c in present for c in schema.group(g))]
    if any(e.matches(c) for e in schema.embeddings for c in present):
        groups.append("embedding")
    return groups


class DatasetChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return dataset_label(obj)


class StudyForm(forms.Form):
    title = forms.CharField(max_length=200, help_text="A short name colleagues will recognise.")
    description = forms.CharField(required=False, max_length=DESCRIPTION_MAX,
                                  widget=forms.Textarea(attrs={"rows": 3}),
                                  help_text="Question, population, inclusion criteria.")
    use_case = forms.ChoiceField(label="Disease (use case)",
                                 choices=[c for c in UseCase.choices if c[0] in SCHEMAS])
    endpoint = forms.ChoiceField(label="Survival endpoint", choices=ENDPOINT_CHOICES, initial="os",
                                 help_text="Time in months from diagnosis to the event.")
    feature_groups = forms.MultipleChoiceField(
        label="Feature groups", choices=GROUP_LABELS, widget=forms.CheckboxSelectMultiple,
        initial=["clinical", "cytogenetic"], required=False,
        help_text="Every participating dataset must carry at least one column of each group.")
    datasets = DatasetChoiceField(
        label="Participating datasets", queryset=Dataset.objects.none(), required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only datasets of approved nodes with the chosen disease are usable.")
    model_kind = forms.ChoiceField(label="Model", choices=Study.ModelKind.choices, initial="deepsurv")
    hp_hidden_layers = forms.CharField(label="Hidden layers (units per layer)", initial="32, 32", required=False,
                                       help_text="DeepSurv: comma-separated, e.g. 32, 32.")
    hp_hidden_units = forms.IntegerField(label="Hidden units", initial=50, required=False,
                                         help_text="SAVAE: units of the encoder and decoders.")
    hp_latent_dim = forms.IntegerField(label="Latent dimensions", initial=5, required=False,
                                       help_text="SAVAE only.")
    hp_dropout = forms.FloatField(label="Dropout (fraction)", initial=0.1, required=False)
    hp_lr = forms.FloatField(label="Learning rate (Adam)", initial=0.001, required=False)
    hp_weight_decay = forms.FloatField(label="Weight decay", initial=0.0001, required=False,
                                       help_text="DeepSurv only.")
    hp_batch_size = forms.IntegerField(label="Batch size (patients)", initial=64, required=False)
    hp_local_epochs = forms.IntegerField(label="Local epochs per round", initial=2, required=False,
                                         help_text="Passes over each hospital's data per round.")
    rounds = forms.IntegerField(label="Federated rounds", initial=5, min_value=ROUNDS.lo, max_value=ROUNDS.hi)
    fraction_nodes = forms.FloatField(label="Fraction of nodes per round (0–1]", initial=1.0,
                                      help_text="1.0 = every hospital trains in every round.")
    min_nodes = forms.IntegerField(label="Minimum hospitals per round", initial=2, min_value=MIN_NODES.lo)
    strategy = forms.ChoiceField(label="Aggregation strategy", choices=Study.Strategy.choices)
    priv_min_patients = forms.IntegerField(
        label="Minimum patients per hospital (patients)", initial=_PRIVACY_DEFAULTS["min_patients_per_node"],
        required=False,
        help_text="A hospital whose training split (the patients not held out for evaluation) is smaller "
                  "does not take part in the run. Empty = 20.")
    priv_min_cell = forms.IntegerField(
        label="Small-cell threshold (patients and events)", initial=_PRIVACY_DEFAULTS["min_cell_count"],
        required=False,
        help_text="A hospital's own C-index is not reported when its held-out patients or their events "
                  "number fewer than this; the overall C-index then uses the other hospitals. Empty = 10.")
    priv_dp_enabled = forms.BooleanField(
        label="Differential privacy on model updates (DP-FedAvg)", required=False,
        help_text="Each hospital bounds its model update; the manager averages hospitals equally and adds "
                  "random noise. Protects each hospital's contribution; costs some accuracy.")
    priv_dp_clip_norm = forms.FloatField(
        label="Update bound C (L2 norm of the weight change per round)", initial=_PRIVACY_DEFAULTS["dp_clip_norm"],
        required=False, help_text="Differential privacy only. Larger updates are scaled down to this size.")
    priv_dp_noise = forms.FloatField(
        label="Noise multiplier z", initial=_PRIVACY_DEFAULTS["dp_noise_multiplier"], required=False,
        help_text="Differential privacy only. Noise per weight has standard deviation z × C ÷ hospitals in "
                  "the round; 0 = no noise (clipping only), higher = more private. With few hospitals the "
                  "noise is large and costs accuracy: compare runs before relying on it.")

    def expected_privacy(self) -> str:
        """The privacy cost one run of these settings charges to each hospital's ledger (the
        accountant the nodes use: fl_engine.federation.privacy), in words for the form."""
        def value(field, cast):
            raw = self.data.get(field) if self.is_bound else self.initial.get(field, self.fields[field].initial)
            try:
                return cast(raw)
            except (TypeError, ValueError):
                return None
        if self.is_bound:
            enabled = str(self.data.get("priv_dp_enabled", "")).lower() in ("on", "true", "1")
        else:
            enabled = bool(self.initial.get("priv_dp_enabled"))
        if not enabled:
            return "Without differential privacy a run gives no DP guarantee and spends no privacy budget."
        z, rounds = value("priv_dp_noise", float), value("rounds", int)
        if z is None or rounds is None or z < 0 or rounds < 1:
            return "Expected privacy cost: enter a noise multiplier and the rounds to see it."
        eps = dp_fedavg_epsilon(z, rounds, DEFAULT_RUN_DELTA)
        if eps == float("inf"):
            return ("Expected privacy cost: unbounded (noise multiplier 0); every hospital with a privacy "
                    "budget refuses the run.")
        return (f"Expected privacy cost per run at each hospital: epsilon {eps:.2f} at delta {DEFAULT_RUN_DELTA:g} "
                f"({rounds} rounds, noise multiplier {z:g}; node-level DP, RDP accountant). A hospital refuses "
                f"a run that would take its dataset past its budget (epsilon {DEFAULT_EPSILON_BUDGET:g} unless its "
                f"operator set another).")

    an_enabled = forms.BooleanField(
        label="Run a federated analysis", required=False,
        help_text="Descriptive statistics, Kaplan-Meier, log-rank and an exact Cox model computed from each "
                  "hospital's counts and sums; no patient row and no raw time leaves a hospital.")
    an_analyses = forms.MultipleChoiceField(
        label="Analyses", choices=ANALYSIS_CHOICES, widget=forms.CheckboxSelectMultiple, required=False,
        initial=[c for c, _ in ANALYSIS_CHOICES])
    an_group_by = forms.CharField(
        label="Group by", required=False, max_length=80,
        help_text="A categorical or yes/no column of the disease's schema (e.g. genotype), or “hospital”; "
                  "empty = no grouping. Kaplan-Meier curves and the description are shown per group.")
    an_numeric = forms.CharField(
        label="Numeric columns to describe", required=False, max_length=2000,
        help_text="Comma-separated; empty = every numeric clinical column of the disease.")
    an_categorical = forms.CharField(
        label="Categorical columns to describe", required=False, max_length=2000,
        help_text="Comma-separated; empty = every categorical and yes/no clinical column.")
    an_covariates = forms.CharField(
        label="Cox covariates", required=False, max_length=2000,
        help_text="Comma-separated columns of the Cox model; empty = a small clinical default of the disease.")
    an_cox_stratified = forms.BooleanField(
        label="Cox stratified by hospital", required=False,
        help_text="Each hospital keeps its own baseline hazard; the hazard ratios are shared.")
    an_time_step = forms.FloatField(
        label="Time grid step (months)", required=False, initial=1.0,
        help_text="Hospitals report event and at-risk counts on this grid only (no raw times). Empty = 1.")

    def __init__(self, *args, user=None, datasets_qs=None, **kwargs):
        super().__init__(*args, **kwargs)
        if datasets_qs is not None:
            self.fields["datasets"].queryset = datasets_qs
        for field, (name, kinds) in HP_FIELDS.items():
            _show_bounds(self.fields[field], field_bounds(kinds[0], name))
        for name, field in self.fields.items():
            if field.help_text:
                # Screen readers read the hint with the field (partials/field.html renders it).
                field.widget.attrs.setdefault("aria-describedby", f"id_{name}_help")

    @classmethod
    def initial_from(cls, study: Study) -> dict:
        hp = study.hyperparameters or {}
        init = {k: getattr(study, k) for k in ("title", "description", "use_case", "endpoint", "feature_groups",
                                                "model_kind", "rounds", "fraction_nodes", "min_nodes", "strategy")}
        init["datasets"] = list(study.datasets.all())
        privacy = {**_PRIVACY_DEFAULTS, **(study.privacy or {})}
        for field, name in PRIVACY_FIELDS.items():
            init[field] = privacy.get(name)
        analysis = study.analysis or {}
        init["an_enabled"] = bool(analysis)
        for field, name in ANALYSIS_FIELDS.items():
            if name in analysis:
                value = analysis[name]
                init[field] = ", ".join(value) if field in ANALYSIS_LISTS else value
        for field, (name, kinds) in HP_FIELDS.items():
            if study.model_kind in kinds and name in hp:
                value = hp[name]
                init[field] = ", ".join(map(str, value)) if isinstance(value, list) else value
        return init

    def _hyperparameters(self, kind: str) -> dict:
        params = {}
        for field, (name, kinds) in HP_FIELDS.items():
            if kind not in kinds:
                continue
            value = self.cleaned_data.get(field)
            if value in (None, ""):
                continue
            if field == "hp_hidden_layers":
                try:
                    value = [int(v) for v in str(value).replace(";", ",").split(",") if v.strip()]
                except ValueError:
                    self.add_error(field, "Give whole numbers separated by commas, e.g. 32, 32.")
                    continue
            params[name] = value
        return params

    def clean(self):
        data = super().clean()
        kind = data.get("model_kind")
        use_case = data.get("use_case")
        endpoint = data.get("endpoint")
        if kind:
            params = self._hyperparameters(kind)
            try:
                data["hyperparameters"] = validate_hyperparameters(kind, params)
            except ValueError as exc:
                placed = False
                try:
                    PARAMS_BY_KIND[kind](**params)
                except PydanticError as perr:
                    for e in perr.errors():
                        name = str(e["loc"][0]) if e["loc"] else ""
                        field = next((f for f, (n, ks) in HP_FIELDS.items() if n == name and kind in ks), None)
                        if field:
                            self.add_error(field, e["msg"])
                            placed = True
                if not placed:
                    self.add_error("model_kind", str(exc))
        privacy = {name: data.get(field) for field, name in PRIVACY_FIELDS.items()
                   if data.get(field) is not None and field not in self.errors}
        try:
            data["privacy"] = PrivacyOptions(**privacy).model_dump()
        except PydanticError as perr:
            by_name = {n: f for f, n in PRIVACY_FIELDS.items()}
            for e in perr.errors():
                self.add_error(by_name.get(str(e["loc"][0]) if e["loc"] else "", "priv_min_patients"), e["msg"])
        if kind and data.get("privacy") and model_privacy_error(kind, data["privacy"]):
            self.add_error("priv_dp_enabled", model_privacy_error(kind, data["privacy"]))
        fraction = data.get("fraction_nodes")
        if fraction is not None and not 0 < fraction <= 1:
            self.add_error("fraction_nodes", "Must be more than 0 and at most 1.")
        data["analysis"] = self._analysis(use_case, endpoint) if data.get("an_enabled") else {}
        if use_case in SCHEMAS and endpoint and endpoint not in [e.name for e in SCHEMAS[use_case].endpoints]:
            self.add_error("endpoint", f"{_ENDPOINTS.get(endpoint, endpoint)} is not recorded for {use_case}; "
                                       f"choose one of: " + ", ".join(_ENDPOINTS.get(e.name, e.name)
                                                                      for e in SCHEMAS[use_case].endpoints))
        elif use_case and endpoint and "datasets" in data:
            for problem in dataset_compatibility_errors(data["datasets"], use_case, endpoint, [],
                                                        data.get("feature_groups") or []):
                self.add_error("datasets", problem)
        return data

    def _analysis(self, use_case, endpoint) -> dict:
        """The Analysis section through the engine's validator (fl_engine.analytics.settings):
        the complete settings, or {} with each error placed on its field."""
        raw: dict = {}
        for field, name in ANALYSIS_FIELDS.items():
            value = self.cleaned_data.get(field)
            if field in ANALYSIS_LISTS:
                if value and value.strip():
                    raw[name] = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
            elif field == "an_time_step":
                if value is not None:
                    raw[name] = value
            elif field == "an_group_by":
                raw[name] = (value or "").strip()
            else:
                raw[name] = value
        if not use_case or not endpoint:
            return {}
        try:
            return validate_analysis(use_case, endpoint, raw)
        except ValueError as exc:
            by_name = {n: f for f, n in ANALYSIS_FIELDS.items()}
            for line in str(exc).splitlines() or [str(exc)]:
                head, _, why = line.partition(": ")
                name = head.split(".")[1] if head.startswith("analysis.") and "." in head else ""
                field = by_name.get(name)
                if field is None:  # a setting the form does not show (or the use case itself)
                    self.add_error("an_enabled", line)
                else:
                    self.add_error(field, why or line)
            return {}

    def service_data(self, status: str) -> dict:
        """The dict `services.create_study` / `update_study` take (same keys as the API)."""
        d = self.cleaned_data
        return {"title": d["title"], "description": d.get("description", ""), "use_case": d["use_case"],
                "endpoint": d["endpoint"], "feature_groups": list(d.get("feature_groups") or []),
                "features": [], "model_kind": d["model_kind"], "hyperparameters": d["hyperparameters"],
                "datasets": list(d.get("datasets") or []), "rounds": d["rounds"],
                "fraction_nodes": d["fraction_nodes"], "min_nodes": d["min_nodes"],
                "strategy": d["strategy"], "privacy": d["privacy"], "analysis": d.get("analysis") or {},
                "status": status}

    def add_service_errors(self, exc) -> None:
        """Place a model ValidationError from the service next to the matching field."""
        for field, messages in getattr(exc, "message_dict", {"__all__": exc.messages}).items():
            target = field if field in self.fields else {"hyperparameters": "model_kind",
                                                         "privacy": "priv_min_patients",
                                                         "analysis": "an_enabled"}.get(field)
            for m in messages:
                self.add_error(target, m)


def endpoints_by_use_case() -> dict[str, list[str]]:
    return {uc: [e.name for e in s.endpoints] for uc, s in SCHEMAS.items()}


class StartRunForm(forms.Form):
    rounds = forms.IntegerField(label="Rounds for this run", min_value=ROUNDS.lo, max_value=ROUNDS.hi)
    comparison = forms.BooleanField(
        label="Comparison phase", required=False, initial=True,
        help_text="after the last round, each hospital also trains a model alone and scores its held-out "
                  "patients with the conventional scores (the comparison page); off: the run ends with the "
                  "federated model")


class ApprovalForm(forms.Form):
    dataset = forms.IntegerField(widget=forms.HiddenInput)
    decision = forms.ChoiceField(choices=[("approved", "Approve"), ("rejected", "Reject")])
    comment = forms.CharField(required=False, max_length=500)
