"""The served model over HTTP, as a user sees it: the real `fmnist serve` (front + MLflow's
scoring server) on a registered model trained on the real data."""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.stages.load import CLASS_NAMES
from tests.serving.conftest import NAME, Front, png_b64

pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def front(served_store, start_front) -> Front:
    """Version 1, served as a fixed version."""
    return start_front(served_store, f"models:/{NAME}/1")


@pytest.fixture(scope="module")
def confident(served_store) -> list[int]:
    """Test images version 1 classifies right with probability over 0.9 (by the Keras model
    itself, not over HTTP)."""
    from fmnist.tracking.registry import Registry

    model = Registry(served_store.tracking_uri).load_keras_model(f"models:/{NAME}/1")
    x = served_store.x_test[:200].astype(np.float32)[..., None] / 255.0
    probs = model.predict(x, verbose=0)
    right = (probs.argmax(1) == served_store.y_test[:200]) & (probs.max(1) > 0.9)
    chosen = [int(i) for i in np.flatnonzero(right)]
    classes = {int(served_store.y_test[i]) for i in chosen}
    assert len(classes) >= 5, "version 1 should be sure of several classes"
    return chosen


def test_a_png_of_a_test_image_gets_its_class(front, served_store, confident):
    images = [served_store.x_test[i] for i in confident[:20]]
    response = front.post({"inputs": {"image": [png_b64(x) for x in images]}})
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == "1"
    predictions = response.json()["predictions"]
    assert len(predictions) == len(images)
    for i, answer in zip(confident, predictions, strict=False):
        label = int(served_store.y_test[i])
        assert answer["class_index"] == label and answer["class_name"] == CLASS_NAMES[label]
        assert len(answer["probabilities"]) == 10
        assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert answer["warning"] is None


def test_png_uint8_and_floats_in_every_payload_format_get_the_same_answer(front, served_store):
    x = served_store.x_test[0]
    png, uint8, floats = png_b64(x), x.tolist(), (x / 255.0)[..., None].tolist()
    payloads = {
        "png": {"inputs": [png]},
        "uint8 28x28": {"inputs": {"image": [uint8]}},
        "uint8 784": {"inputs": [x.reshape(-1).tolist()]},
        "floats 28x28x1 (the Keras flavour's payload)": {"inputs": [floats]},
        "dataframe_split": {"dataframe_split": {"columns": ["image"], "data": [[png]]}},
        "dataframe_records": {"dataframe_records": [{"image": uint8}]},
        "instances": {"instances": [{"image": png}]},
    }
    answers = {}
    for name, payload in payloads.items():
        response = front.post(payload)
        assert response.status_code == 200, f"{name}: {response.text}"
        answers[name] = response.json()["predictions"]
    reference = answers.pop("png")[0]
    for name, predictions in answers.items():
        assert len(predictions) == 1, name
        assert predictions[0]["class_index"] == reference["class_index"], name
        np.testing.assert_allclose(
            predictions[0]["probabilities"], reference["probabilities"], atol=1e-5, err_msg=name
        )


def test_a_colour_image_of_another_size_is_converted_with_a_warning(front, served_store):
    response = front.post({"inputs": [png_b64(served_store.x_test[0], "RGB", (56, 56))]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["warning"] == "image 0: 56x56 resized to 28x28"


BAD = {
    "array of another shape": (
        {"inputs": [np.zeros((27, 28), int).tolist()]},
        400,
        "image 0: array of shape (27, 28); expected 28x28, 28x28x1 or 784 values",
    ),
    "a 100-long row": ({"inputs": [list(range(100))]}, 400, "array of shape (100,)"),
    "bytes that are not an image": (
        {"inputs": ["bm90IGFuIGltYWdl"]},
        400,
        "image 0: cannot read image: not an image format PIL reads",
    ),
    "text that is not base64": ({"inputs": ["%%%"]}, 400, "not base64"),
    "pixels out of range": ({"inputs": [[300] * 784]}, 400, "pixels from 300 to 300"),
    "an empty batch": ({"inputs": []}, 400, "empty batch: no images"),
    "an empty table": (
        {"dataframe_split": {"columns": ["image"], "data": []}},
        400,
        "empty batch: no images",
    ),
    "the second image bad": (
        {"inputs": {"image": [np.zeros(784, int).tolist(), [1, 2, 3]]}},
        400,
        "image 1: array of shape (3,)",
    ),
    "no image column": (
        {"inputs": {"picture": ["x" * 5000]}},
        400,
        "input does not match the signature: Model is missing inputs ['image']",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_input_gets_a_4xx_naming_it_and_the_next_request_succeeds(front, case):
    payload, status, message = BAD[case]
    response = front.post(payload)
    assert response.status_code == status, response.text
    body = response.json()
    assert message in body["message"]
    # The problem is named, not buried under the request echoed back (MLflow's default).
    assert len(body["message"]) < 300 and "stack_trace" not in body
    assert front.post({"inputs": [np.zeros(784, int).tolist()]}).status_code == 200
    assert front.process.poll() is None


def test_a_payload_over_the_limit_is_413_and_the_next_request_succeeds(front):
    # serving.max_payload_mb defaults to 8: a little over it.
    body = b'{"inputs": ["' + b"A" * (8 * 2**20) + b'"]}'
    response = front.post(None, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "over the limit of 8 MiB" in response.json()["message"]
    assert front.post({"inputs": [np.zeros(784, int).tolist()]}).status_code == 200


def test_a_body_that_is_not_json_is_a_400_without_the_body(front):
    response = front.post(None, data=b"{not json" + b"x" * 5000)
    assert response.status_code == 400
    assert "valid JSON" in response.json()["message"]
    assert "xxxx" not in response.text


def test_version_says_which_model_answers(front):
    import requests

    body = requests.get(f"{front.url}/version", timeout=10).json()
    assert body["name"] == NAME and body["version"] == "1"
    assert body["uri"] == f"models:/{NAME}/1"
