from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from fedhaem_kernel.schema import SCHEMAS
from fl_engine.analytics.settings import validate_analysis
from portal.core.choices import UseCase
from portal.datasets.models import Dataset
from portal.datasets.selectors import datasets_visible_to
from portal.studies.config import (ROUNDS, DATASETS_MAX, DESCRIPTION_MAX, FEATURE_NAME_MAX, FEATURES_MAX, PARAMS_BY_KIND,
                                   PrivacyOptions, model_privacy_error, validate_hyperparameters, validate_privacy)
from portal.studies.lifecycle import missed_phases
from portal.studies.models import ModelVersion, RoundMetric, Run, Study
from portal.studies.selectors import dataset_compatibility_errors

FEATURE_GROUPS = ("clinical", "cytogenetic", "genomic", "embedding", "therapy")


def _openapi_object(model) -> dict:
    """A pydantic model's JSON schema in OpenAPI 3.0 terms (boolean exclusive bounds, no titles)."""
    def openapi30(prop: dict) -> dict:
        prop = {k: v for k, v in prop.items() if k != "title"}
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in prop:
                prop[plain], prop[bound] = prop.pop(bound), True
        if isinstance(prop.get("items"), dict):
            prop["items"] = openapi30(prop["items"])
        return prop

    props = {name: openapi30(prop) for name, prop in model.model_json_schema()["properties"].items()}
    return {"type": "object", "properties": props, "additionalProperties": False}


@extend_schema_field(_openapi_object(PrivacyOptions))
class PrivacyField(serializers.JSONField):
    """The study's privacy options (an object; options left out keep their current value, or
    the strict default on a new study)."""


@extend_schema_field({"oneOf": [{**_openapi_object(spec), "title": kind} for kind, spec in PARAMS_BY_KIND.items()]})
class HyperparametersField(serializers.JSONField):
    """The model's hyper-parameters (an object; bounds from fl_engine.models.params, the spec the
    engine also enforces). Left out: the model's defaults."""


class StudySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    datasets = serializers.PrimaryKeyRelatedField(many=True, queryset=Dataset.objects.all(), required=False)
    feature_groups = serializers.ListField(child=serializers.ChoiceField(choices=FEATURE_GROUPS),
                                           max_length=len(FEATURE_GROUPS), required=False)
    features = serializers.ListField(child=serializers.CharField(max_length=FEATURE_NAME_MAX),
                                     max_length=FEATURES_MAX, required=False)
    hyperparameters = HyperparametersField(required=False)
    use_case = serializers.ChoiceField(choices=UseCase.choices)
    privacy = PrivacyField(required=False, help_text="Privacy options; options left out keep their current "
                                                     "value (the strict default on a new study).")

    class Meta:
        model = Study
        fields = ["id", "title", "description", "use_case", "endpoint", "feature_groups", "features",
                  "model_kind", "hyperparameters", "datasets", "rounds", "fraction_nodes", "min_nodes",
                  "strategy", "privacy", "analysis", "status", "owner", "created_at", "updated_at"]
        read_only_fields = ["owner", "created_at", "updated_at"]
        extra_kwargs = {"description": {"max_length": DESCRIPTION_MAX}}

    def to_internal_value(self, data):
        # Counted before the field looks each id up in the database.
        ids = data.get("datasets") if isinstance(data, dict) else None
        if isinstance(ids, list) and len(ids) > DATASETS_MAX:
            raise serializers.ValidationError({"datasets": [f"at most {DATASETS_MAX} datasets, got {len(ids)}"]})
        return super().to_internal_value(data)

    def validate_datasets(self, datasets):
        """Only datasets the requesting user sees: the catalogue's, and the own hospital's
        announcements. Another hospital's unregistered announcement reads as a missing id."""
        request = self.context.get("request")
        if request is None or not datasets:
            return datasets
        keep = set(self.instance.datasets.values_list("pk", flat=True)) if self.instance else set()
        seen = set(datasets_visible_to(request.user).filter(pk__in=[d.pk for d in datasets]).values_list("pk", flat=True))
        hidden = [d.pk for d in datasets if d.pk not in seen | keep]
        if hidden:
            raise serializers.ValidationError([f'Invalid pk "{pk}" - object does not exist.' for pk in hidden])
        return datasets

    def validate_rounds(self, v):
        why = ROUNDS.check(v)
        if why:
            raise serializers.ValidationError(why)
        return v

    def validate_min_nodes(self, v):
        if not 1 <= v <= 1000:
            raise serializers.ValidationError("must be at least 1")
        return v

    def validate_fraction_nodes(self, v):
        if not 0 < v <= 1:
            raise serializers.ValidationError("must be in (0, 1]")
        return v

    def validate(self, attrs):
        inst = self.instance
        kind = attrs.get("model_kind", inst.model_kind if inst else Study.ModelKind.DEEPSURV)
        try:
            attrs["hyperparameters"] = validate_hyperparameters(
                kind, attrs.get("hyperparameters", inst.hyperparameters if inst else {}))
        except ValueError as exc:
            raise serializers.ValidationError({"hyperparameters": str(exc)})
        given = attrs.get("privacy", {})
        if not isinstance(given, dict):
            raise serializers.ValidationError({"privacy": "must be an object of privacy options"})
        try:
            attrs["privacy"] = validate_privacy({**(inst.privacy if inst else {}), **given})
        except ValueError as exc:
            raise serializers.ValidationError({"privacy": str(exc)})
        if model_privacy_error(kind, attrs["privacy"]):
            raise serializers.ValidationError({"privacy": model_privacy_error(kind, attrs["privacy"])})
        use_case = attrs.get("use_case", inst.use_case if inst else None)
        endpoint = attrs.get("endpoint", inst.endpoint if inst else "os")
        if use_case in SCHEMAS and endpoint not in [e.name for e in SCHEMAS[use_case].endpoints]:
            raise serializers.ValidationError(
                {"endpoint": f"{endpoint!r} is not an endpoint of {use_case}: "
                             f"{', '.join(e.name for e in SCHEMAS[use_case].endpoints)}"})
        if "analysis" in attrs and attrs["analysis"] is None:  # null: the study has no analysis settings
            attrs["analysis"] = {}
        analysis = attrs.get("analysis", inst.analysis if inst else {})
        if not isinstance(analysis, dict):
            raise serializers.ValidationError(
                {"analysis": f"must be an object of analysis settings (or null), got {type(analysis).__name__}"})
        if analysis:  # the study form's Analysis section: the engine's validator (portal.analyses)
            try:
                attrs["analysis"] = validate_analysis(use_case, endpoint, analysis)
            except ValueError as exc:
                raise serializers.ValidationError({"analysis": str(exc)})
        datasets = attrs.get("datasets", list(inst.datasets.all()) if inst else [])
        problems = dataset_compatibility_errors(
            datasets, use_case, endpoint, attrs.get("features", inst.features if inst else []),
            attrs.get("feature_groups", inst.feature_groups if inst else []))
        if problems:
            raise serializers.ValidationError({"datasets": problems})
        return attrs


class RoundMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = RoundMetric
        fields = ["round", "node", "name", "value"]


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["registered_model_name", "version", "mlflow_run_id", "artifact_uri", "metrics", "created_at"]


class RunSerializer(serializers.ModelSerializer):
    study_title = serializers.CharField(source="study.title", read_only=True)
    metrics = RoundMetricSerializer(many=True, read_only=True)
    model_version = ModelVersionSerializer(read_only=True, allow_null=True)
    rounds_completed = serializers.SerializerMethodField()
    missed = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = ["id", "study", "study_title", "status", "rounds", "rounds_completed", "config",
                  "created_at", "started_at", "finished_at", "flower_run_id", "error", "metrics",
                  "model_version", "missed"]

    def get_missed(self, run) -> list[dict]:
        """Hospitals that did not answer a phase of the run: {phase, node, reason}."""
        return missed_phases(run)

    def get_rounds_completed(self, run) -> int:
        rounds = [m.round for m in run.metrics.all() if m.node == RoundMetric.GLOBAL and m.name == "c_index"]
        return max(rounds, default=0)
