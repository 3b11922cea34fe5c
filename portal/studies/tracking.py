"""MLflow: each finished run becomes an MLflow run (parameters, per-round metrics, the global
model as a pyfunc artifact) and a version in the model registry, linked by ModelVersion."""
from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from portal.core import at_rest
from portal.core.private_files import private_dir
from portal.studies.models import ModelVersion, Run

log = logging.getLogger(__name__)


def registered_name(run: Run) -> str:
    s = run.study
    return f"fedhaem-{s.use_case.lower()}-{s.endpoint}-study{s.pk}"


def model_requirements() -> list[str]:
    """What loading the pyfunc needs, pinned to this install. Named here so that MLflow does not
    infer them: inference loads the model in a fresh Python subprocess (torch and all), which took
    20-50 s of every conclusion on a busy machine and gave these same three lines."""
    from importlib.metadata import version

    import mlflow  # installed as mlflow-skinny here; the model asks for mlflow, as MLflow writes it

    return [f"mlflow=={mlflow.__version__}", *(f"{name}=={version(name)}" for name in ("cloudpickle", "fedhaem"))]


@contextmanager
def _plaintext_copy(model_dir: Path):
    """`model_dir`'s files decrypted into a private temporary folder under var/ (removed after),
    for MLflow to copy into its (encrypted) artifact store."""
    tmp = Path(tempfile.mkdtemp(prefix="model-", dir=private_dir(Path(settings.VAR_DIR) / "tmp")))
    try:
        for path in sorted(Path(model_dir).iterdir()):
            if path.is_file():
                (tmp / path.name).write_bytes(at_rest.read_file(path))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def log_run(run: Run, model_dir: Path) -> ModelVersion:
    import mlflow
    from mlflow import MlflowClient

    from fl_engine.serving import SurvivalPyfunc  # mlflow: heavy, only when a model is registered
    from portal.core import mlflow_at_rest  # registers the encrypted artifact store's URI scheme
    from portal.studies import capsule  # cycle: capsule -> services -> this module

    uri = settings.MLFLOW_TRACKING_URI
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp_name = f"fedhaem-study-{run.study_id}"
    exp = client.get_experiment_by_name(exp_name)
    if exp is None:
        artifacts = None
        if "://" not in settings.MLFLOW_ARTIFACT_ROOT or settings.MLFLOW_ARTIFACT_ROOT.startswith("file:"):
            folder = Path(settings.MLFLOW_ARTIFACT_ROOT.removeprefix("file://")).joinpath(exp_name)
            # encrypted at rest: MLflow writes and reads it through portal.core.mlflow_at_rest
            artifacts = mlflow_at_rest.path_to_uri(folder) if at_rest.enabled() else folder.as_uri()
        exp_id = client.create_experiment(exp_name, artifact_location=artifacts)
    else:
        exp_id = exp.experiment_id
    c = run.config
    params = {"portal_run_id": run.pk, "study": run.study.title[:200], "use_case": c["use_case"],
              "endpoint": c["endpoint"], "model": c["model"], "rounds": run.rounds,
              "fraction_nodes": c["fraction_nodes"], "min_nodes": c["min_nodes"], "strategy": c["strategy"],
              "flower_run_id": run.flower_run_id,
              **{f"hp.{k}": v for k, v in c["hyperparameters"].items()},
              **{f"dataset.{d['node']}": f"{d['name']} v{d['version']} ({d['patients']} patients, "
                                         f"{d['fingerprint'][:12]})" for d in c["datasets"]}}
    with mlflow.start_run(experiment_id=exp_id, run_name=f"portal-run-{run.pk}") as mrun:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for m in run.metrics.all():
            key = f"{m.name}.{m.node}".replace(" ", "_")
            mlflow.log_metric(key, m.value, step=m.round)
        with _plaintext_copy(model_dir) as plain_dir:  # the run folder's files may be encrypted
            info = mlflow.pyfunc.log_model(name="model", python_model=SurvivalPyfunc(),
                                           artifacts={"model_dir": str(plain_dir)},
                                           pip_requirements=model_requirements(),
                                           registered_model_name=registered_name(run))
        mlflow_run_id = mrun.info.run_id
    versions = client.search_model_versions(f"name='{registered_name(run)}'")
    mine = [v for v in versions if v.run_id == mlflow_run_id] or versions
    version = max(mine, key=lambda v: int(v.version))
    final = {f"{m.name}.{m.node}": m.value for m in run.metrics.filter(round=run.rounds)}
    lineage = capsule.lineage(run)
    code = lineage["code"]
    for key, value in (("fedhaem.source_sha256", code["source_sha256"]), ("fedhaem.git_commit", code["git_commit"]),
                       ("fedhaem.portal_run_id", str(run.pk)), ("fedhaem.seed", str(lineage["seeds"]["run"]))):
        if value:
            client.set_model_version_tag(registered_name(run), str(version.version), key, value)
    return ModelVersion.objects.create(run=run, mlflow_run_id=mlflow_run_id,
                                       registered_model_name=registered_name(run), version=str(version.version),
                                       artifact_uri=info.model_uri, metrics=final, lineage=lineage)


# --- the registry's lifecycle (portal.studies.registry keeps the audited record) ------------

class RegistryMissing(LookupError):
    """MLflow's registry does not hold the registered model or version."""


class RegistryInvalid(ValueError):
    """MLflow's registry refused a value (its own rules on tag keys and values)."""


def _client():
    import mlflow
    from mlflow import MlflowClient

    uri = settings.MLFLOW_TRACKING_URI
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient()


def _registry_call(fn, *args) -> None:
    from mlflow.exceptions import MlflowException

    try:
        fn(*args)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryMissing(str(exc).splitlines()[0][:300]) from exc
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise RegistryInvalid(str(exc).splitlines()[0][:300]) from exc
        raise


def set_alias(name: str, alias: str, version: str) -> None:
    client = _client()
    _registry_call(client.set_registered_model_alias, name, alias, str(version))


def delete_alias(name: str, alias: str) -> None:
    client = _client()
    _registry_call(client.delete_registered_model_alias, name, alias)


def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    client = _client()
    _registry_call(client.set_model_version_tag, name, str(version), key, value)


def delete_version_tag(name: str, version: str, key: str) -> None:
    client = _client()
    _registry_call(client.delete_model_version_tag, name, str(version), key)
