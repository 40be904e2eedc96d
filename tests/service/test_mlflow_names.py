"""The names the pipeline uses belong to the pipeline from `stack-up` on (issue 18, item 3):
on a fresh stack, before any pipeline run, the read-only `viewer` cannot take the experiment
or the registered model, nor the `@champion` alias `fmnist predict` loads; and a name the
viewer took on an older stack is handed back at the next `stack-up`.

MLflow's basic auth lets any user create experiments and registered models of other names
(only its workspaces mode refuses that; docs/threat-model.md says why the stack does not use
it): these tests hold the stack to the pipeline's names.
"""

from __future__ import annotations

import uuid

import pytest

from fmnist.stack.mlflow_server import (
    MLFLOW_ADMIN,
    MLFLOW_PIPELINE_USER,
    MLFLOW_VIEWER,
    mlflow_login,
)
from fmnist.stack.mlflow_setup import ensure_names, pipeline_names
from tests.service_fixtures import ServiceStack, status_of

pytestmark = pytest.mark.service


def _api(service_stack: ServiceStack) -> str:
    return f"{service_stack.mlflow_url}/api/2.0/mlflow"


def _logins(service_stack: ServiceStack) -> tuple[str, str]:
    secrets = service_stack.secrets
    return (
        f"{MLFLOW_PIPELINE_USER}:{secrets.mlflow_pipeline_password}",
        f"{MLFLOW_VIEWER}:{secrets.mlflow_viewer_password}",
    )


def test_the_pipelines_names_exist_and_belong_to_it(service_stack: ServiceStack) -> None:
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    experiments, models = pipeline_names()
    assert experiments and models  # the profiles name at least one of each
    client = MlflowClient(tracking_uri=service_stack.mlflow_url)
    with mlflow_login(MLFLOW_ADMIN, service_stack.secrets.mlflow_admin_password):
        auth = AuthServiceClient(service_stack.mlflow_url)
        for name in experiments:
            experiment = client.get_experiment_by_name(name)
            assert experiment is not None, f"experiment {name!r} not created at stack-up"
            for user, level in ((MLFLOW_PIPELINE_USER, "MANAGE"), (MLFLOW_VIEWER, "READ")):
                got = auth.get_user_permission(user, "experiment", experiment.experiment_id)
                assert got.permission == level, (name, user, got.permission)
        for name in models:
            assert client.get_registered_model(name).name == name
            for user, level in ((MLFLOW_PIPELINE_USER, "MANAGE"), (MLFLOW_VIEWER, "READ")):
                got = auth.get_user_permission(user, "registered_model", name)
                assert got.permission == level, (name, user, got.permission)


def test_the_viewer_cannot_take_them_before_the_first_run(service_stack: ServiceStack) -> None:
    from mlflow.tracking import MlflowClient

    api = _api(service_stack)
    pipeline, viewer = _logins(service_stack)
    experiments, models = pipeline_names()
    client = MlflowClient(tracking_uri=service_stack.mlflow_url)
    for name in experiments:
        # Taken already: MLflow answers 400 RESOURCE_ALREADY_EXISTS, and the viewer may not
        # write into it, rename it or delete it.
        assert status_of(f"{api}/experiments/create", {"name": name}, auth=viewer) == 400
        experiment_id = client.get_experiment_by_name(name).experiment_id
        for path, body in (
            ("runs/create", {"experiment_id": experiment_id}),
            ("experiments/update", {"experiment_id": experiment_id, "new_name": "mine"}),
            ("experiments/delete", {"experiment_id": experiment_id}),
        ):
            assert status_of(f"{api}/{path}", body, auth=viewer) == 403, path
    for name in models:
        assert status_of(f"{api}/registered-models/create", {"name": name}, auth=viewer) == 400
        alias = {"name": name, "alias": "champion", "version": "1"}
        assert status_of(f"{api}/registered-models/alias", alias, auth=viewer) == 403
        rename = {"name": name, "new_name": f"{name}-mine"}
        assert status_of(f"{api}/registered-models/rename", rename, auth=viewer) == 403
        tag = {"name": name, "key": "checked-by", "value": "service-tests"}
        # The pipeline may write to its model (a tag here: no version or alias is made).
        assert status_of(f"{api}/registered-models/set-tag", tag, auth=pipeline) == 200
        assert status_of(f"{api}/registered-models/set-tag", tag, auth=viewer) == 403


def test_a_name_the_viewer_took_is_handed_back(service_stack: ServiceStack) -> None:
    from mlflow.tracking import MlflowClient

    api = _api(service_stack)
    pipeline, viewer = _logins(service_stack)
    secrets = service_stack.secrets
    name = f"taken-by-viewer-{uuid.uuid4().hex[:8]}"
    # An older stack, where the viewer got there first: it created and MANAGEs both.
    with mlflow_login(MLFLOW_VIEWER, secrets.mlflow_viewer_password):
        taken = MlflowClient(tracking_uri=service_stack.mlflow_url)
        experiment_id = taken.create_experiment(name)
        taken.create_registered_model(name)
    body = {"experiment_id": experiment_id}
    assert status_of(f"{api}/runs/create", body, auth=pipeline) == 403

    # What stack-up does with the pipeline's names.
    url = service_stack.stack.mlflow.url
    ensure_names(
        url, secrets.mlflow_admin_password, secrets.mlflow_pipeline_password, [name], [name]
    )

    assert status_of(f"{api}/runs/create", body, auth=pipeline) == 200
    assert status_of(f"{api}/runs/create", body, auth=viewer) == 403
    assert status_of(f"{api}/experiments/delete", body, auth=viewer) == 403
    alias = {"name": name, "alias": "champion", "version": "1"}
    assert status_of(f"{api}/registered-models/alias", alias, auth=viewer) == 403
    tag = {"name": name, "key": "owner", "value": "pipeline"}
    assert status_of(f"{api}/registered-models/set-tag", tag, auth=pipeline) == 200
