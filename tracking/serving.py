"""MLflow's side of serving: where a model URI points now (a registry alias moves), the model
fetched to a local folder, and the command of MLflow's scoring server for it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from fmnist.stages.serving import COLUMN, BadInput
from fmnist.stages.swap import Target
from fmnist.tracking.client import fluent_uri
from fmnist.tracking.registry import Registry


def resolve_target(tracking_uri: str, model_uri: str) -> Target | None:
    """The model a URI points at now, pinned: models:/NAME@ALIAS -> models:/NAME/VERSION.

    None if the registry has no such model or alias (yet); other errors (a server away, a
    refusal) are raised. Any other URI (models:/NAME/3, runs:/..., a model id) is served as
    it is and never moves.
    """
    path = model_uri.removeprefix("models:/")
    if path != model_uri and "@" in path:
        name, _, alias = path.partition("@")
        try:
            found = Registry(tracking_uri).client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # No such model: RESOURCE_DOES_NOT_EXIST; no such alias: INVALID_PARAMETER_VALUE.
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return Target(f"models:/{name}/{found.version}", str(found.version), name)
    if path != model_uri and "/" in path:  # models:/NAME/VERSION
        name, _, version = path.rpartition("/")
        return Target(model_uri, version, name)
    return Target(uri=model_uri, version=model_uri)


def download_model(tracking_uri: str, target: Target, dest: Path) -> Path:
    """The target's model files copied into dest (created); returns the model's folder."""
    import mlflow.artifacts

    dest.mkdir(parents=True, exist_ok=True)
    with fluent_uri(tracking_uri):
        return Path(mlflow.artifacts.download_artifacts(target.uri, dst_path=str(dest)))


def scoring_command(
    model_dir: Path, host: str, port: int, timeout_s: int, workers: int
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of MLflow's scoring server for a local model: what
    `mlflow models serve --env-manager local` runs, without the CLI's parent process, and
    with uvicorn taken from this interpreter (PATH may lack the venv's bin folder)."""
    from mlflow.pyfunc import scoring_server

    command, env = scoring_server.get_cmd(str(model_dir), port, host, timeout_s, workers)
    argv = shlex.split(command)
    if argv[0] != "uvicorn":  # get_cmd's form changed: fail loudly, not start something else
        raise RuntimeError(f"unexpected scoring server command: {command}")
    return [sys.executable, "-m", "uvicorn", *argv[1:]], env


class ServedModel:
    """The served model of one pinned target, loaded in this process (batch scoring): the same
    code and preprocessing as over HTTP."""

    def __init__(self, tracking_uri: str, target: Target) -> None:
        import mlflow.pyfunc

        self.target = target
        with fluent_uri(tracking_uri):
            self._model = mlflow.pyfunc.load_model(target.uri)

    def predict(self, images: list[Any]) -> list[dict[str, Any]]:
        """One answer per image (class_index, class_name, probabilities, warning); BadInput
        naming the first image the model cannot take."""
        import pandas as pd

        try:
            answers = self._model.predict(pd.DataFrame({COLUMN: images}))
        except MlflowException as exc:
            raise BadInput(exc.message) from exc
        return answers.to_dict("records")
