"""The logged model is the served one (tracking/pyfunc.py): a pyfunc with a signature, an
input example and requirements naming this project, the Keras model inside; and
load_keras_model gives back the Keras model of it, and of a Keras-flavour model too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmnist.stages.load import CLASS_NAMES
from fmnist.tracking import open_tracker
from fmnist.tracking.client import fluent_uri
from fmnist.tracking.models import active_run, load_keras_model


@pytest.fixture
def tracker(fresh_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # where MLflow may write scratch files
    return open_tracker(fresh_store, "unit", str(tmp_path / "artifacts"))


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


EXAMPLE = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)


def test_the_logged_model_is_the_served_pyfunc(tracker, model):
    import mlflow.pyfunc
    from mlflow.models import Model

    with tracker.run("m") as run_id:
        uri = tracker.log.keras_model(run_id, model, EXAMPLE)
    assert tracker.get_run(run_id).data.tags["model_uri"] == uri
    with fluent_uri(tracker.tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(uri))
        served = mlflow.pyfunc.load_model(uri)
    meta = Model.load(local)
    assert "python_function" in meta.flavors and "keras" not in meta.flavors
    assert meta.signature.inputs.input_names() == ["image"]
    assert meta.signature.outputs.input_names() == [
        "class_index",
        "class_name",
        "probabilities",
        "warning",
    ]
    example = json.loads((local / "serving_input_example.json").read_text())
    assert list(example["inputs"]) == ["image"]  # a base64 PNG: what users send
    requirements = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("fashion-mnist-pipeline") for r in requirements)
    assert any(r.startswith("keras==") for r in requirements)

    pixels = np.round(EXAMPLE[0] * 255).astype(np.uint8)
    answers = served.predict({"image": [pixels.tolist()]})
    expected = model.predict(pixels[None] / 255.0, verbose=0)[0]
    assert answers["class_index"][0] == int(np.argmax(expected))
    assert answers["class_name"][0] == CLASS_NAMES[int(np.argmax(expected))]
    np.testing.assert_allclose(answers["probabilities"][0], expected, atol=1e-5)


def test_bad_input_to_the_pyfunc_is_invalid_parameter_value(tracker, model):
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    with tracker.run("m") as run_id:
        uri = tracker.log.keras_model(run_id, model, EXAMPLE)
    with fluent_uri(tracker.tracking_uri):
        served = mlflow.pyfunc.load_model(uri)
    with pytest.raises(MlflowException, match=r"image 0: array of shape \(3,\)") as err:
        served.predict({"image": [[1, 2, 3]]})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 when served


def test_load_keras_model_gives_the_keras_model_compiled(tracker, model):
    with tracker.run("m") as run_id:
        uri = tracker.log.keras_model(run_id, model, EXAMPLE)
    loaded = load_keras_model(tracker.tracking_uri, uri)
    assert loaded.compiled and loaded.count_params() == model.count_params()
    np.testing.assert_allclose(
        loaded.predict(EXAMPLE, verbose=0), model.predict(EXAMPLE, verbose=0), atol=1e-6
    )


def test_load_keras_model_reads_a_keras_flavour_model_logged_before_serving(tracker, model):
    import mlflow.keras

    with tracker.run("old") as run_id, active_run(tracker.tracking_uri, run_id):
        info = mlflow.keras.log_model(model, name="model", pip_requirements=["keras"])
    loaded = load_keras_model(tracker.tracking_uri, info.model_uri)
    np.testing.assert_allclose(
        loaded.predict(EXAMPLE, verbose=0), model.predict(EXAMPLE, verbose=0), atol=1e-6
    )


def test_an_alias_resolves_to_its_pinned_version_and_a_missing_one_to_none(tracker, model):
    from fmnist.tracking.serving import resolve_target

    uri_of = tracker.tracking_uri
    assert resolve_target(uri_of, "models:/reg@champion") is None  # no such model yet
    with tracker.run("m") as run_id:
        uri = tracker.log.keras_model(run_id, model, EXAMPLE)
    version = tracker.registry.register(uri, "reg")
    assert resolve_target(uri_of, "models:/reg@champion") is None  # no such alias yet
    tracker.registry.set_alias("reg", "champion", version)
    target = resolve_target(uri_of, "models:/reg@champion")
    assert (target.uri, target.version, target.name) == (f"models:/reg/{version}", version, "reg")
    fixed = resolve_target(uri_of, "models:/reg/7")  # a fixed version: no registry call
    assert (fixed.uri, fixed.version, fixed.name) == ("models:/reg/7", "7", "reg")
    assert resolve_target(uri_of, f"runs:/{run_id}/model").version == f"runs:/{run_id}/model"


def test_fmnist_serve_without_a_champion_says_so_and_exits_1(fresh_store, monkeypatch, capsys):
    import keras

    from fmnist.flows.children import free_port
    from fmnist.flows.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # The backend this process already imported (CI runs tests/unit again under jax): serve
    # refuses to switch it; monkeypatch restores what apply_backend sets.
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    store = fresh_store  # a new, empty one
    code = main(["serve", "--tracking-uri", store, "--port", str(free_port("127.0.0.1"))])
    assert code == 1
    assert (
        "nothing to serve: is there a models:/fashion-mnist-cnn@champion?"
        in capsys.readouterr().out
    )
