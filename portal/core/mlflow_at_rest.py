"""An MLflow artifact repository that keeps a local artifact store encrypted at rest.

Registered for the URI scheme `fedhaem-enc` (`fedhaem-enc:///abs/folder`): every artifact MLflow
logs (the pyfunc's MLmodel, requirements, pickled wrapper, the model files) is written through the
kernel's encrypting writer, and every download (mlflow.artifacts.download_artifacts,
pyfunc.load_model on "models:/name/1" or "runs:/...") decrypts into the caller's temporary folder.
Listing works on the encrypted files (sizes are the encrypted sizes). Experiments the portal
creates while at-rest encryption is on get such an artifact location (portal.studies.tracking);
experiments created before keep their plaintext `file:` store (MLflow reads it by that URI, so
`encrypt_at_rest --migrate` leaves it alone and counts its files).

A process that reads these artifacts outside the portal (`mlflow models serve`) must register the
scheme too: `portal.core.mlflow_at_rest.register()` after Django settings are configured."""
from __future__ import annotations

import os
import urllib.parse
import urllib.request

from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from fedhaem_kernel import atrest
from portal.core.at_rest import keyring

SCHEME = "fedhaem-enc"


def _keys():
    return keyring()


def path_to_uri(path) -> str:
    return f"{SCHEME}://{urllib.request.pathname2url(os.path.abspath(path))}"


class EncryptedLocalArtifactRepository(LocalArtifactRepository):
    """LocalArtifactRepository with files encrypted by fedhaem_kernel.atrest."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self._artifact_dir = urllib.request.url2pathname(urllib.parse.urlparse(artifact_uri).path)

    def _write_to_destination_path(self, artifact_file_name, writer, artifact_path=None, finalize_temp_path=None):
        _, destination = self._get_destination_artifact_path(artifact_file_name, artifact_path)
        with atrest.EncryptingWriter(destination, _keys()) as out:
            writer(out)

    def log_artifact(self, local_file, artifact_path=None):
        _, destination = self._get_destination_artifact_path(local_file, artifact_path)
        with open(local_file, "rb") as src:
            atrest.write_stream(destination, src, _keys())

    def log_artifacts(self, local_dir, artifact_path=None):
        base = self._get_or_create_artifact_dir(artifact_path)
        for root, _dirs, files in os.walk(local_dir):
            rel = os.path.relpath(root, local_dir)
            target = base if rel == "." else os.path.join(base, rel)
            os.makedirs(target, mode=0o700, exist_ok=True)
            for name in files:
                with open(os.path.join(root, name), "rb") as src:
                    atrest.write_stream(os.path.join(target, name), src, _keys())

    def download_artifacts(self, artifact_path, dst_path=None):
        # never hand out the stored (encrypted) path: always decrypt into a destination folder
        return super(LocalArtifactRepository, self).download_artifacts(artifact_path, dst_path)

    def _download_file(self, remote_file_path, local_path):
        from mlflow.utils.uri import validate_path_is_safe, validate_path_within_directory

        remote = os.path.join(self.artifact_dir, os.path.normpath(validate_path_is_safe(remote_file_path)))
        validate_path_within_directory(self.artifact_dir, remote)
        with open(local_path, "wb") as dst:  # a plaintext file here is refused (NotEncrypted names it)
            atrest.read_stream(remote, dst, _keys())


def register() -> None:
    _artifact_repository_registry.register(SCHEME, EncryptedLocalArtifactRepository)


register()
