"""What the served model takes (stages/serving.py): every input kind, every bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from fmnist.stages.load import CLASS_NAMES
from fmnist.stages.serving import BadInput, answers, images_of, prepare, to_pixels

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, size=(28, 28), dtype=np.uint8)
EXPECTED = (PIXELS / 255.0).astype(np.float32)[..., None]


def encoded(array: np.ndarray, fmt: str = "PNG", mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b64(encoded(PIXELS)), id="base64-png"),
        pytest.param("data:image/png;base64," + b64(encoded(PIXELS)), id="data-url"),
        pytest.param(encoded(PIXELS), id="png-bytes"),
        pytest.param(PIXELS.tolist(), id="uint8-28x28"),
        pytest.param(PIXELS[..., None].tolist(), id="uint8-28x28x1"),
        pytest.param(PIXELS.reshape(-1).tolist(), id="uint8-784"),
        pytest.param(PIXELS, id="uint8-ndarray"),
        pytest.param((PIXELS / 255.0).tolist(), id="floats-28x28"),
        pytest.param((PIXELS / 255.0)[..., None].tolist(), id="floats-28x28x1"),
        pytest.param((PIXELS / 255.0).reshape(-1).tolist(), id="floats-784"),
    ],
)
def test_every_form_of_one_image_gives_the_same_pixels(value):
    pixels, warning = to_pixels(value, "image 0")
    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, EXPECTED, atol=1e-6)
    assert warning is None


def test_jpeg_is_read_close_to_the_original():
    pixels, warning = to_pixels(b64(encoded(PIXELS, "JPEG")), "image 0")
    assert warning is None
    assert np.abs(pixels - EXPECTED).mean() < 0.1  # lossy, but the same picture


def test_colour_and_another_size_are_converted_with_a_warning():
    rgb = np.zeros((40, 64, 3), np.uint8)
    rgb[..., 1] = 255  # pure green: greyscale (ITU-R 601) 0.587 * 255
    pixels, warning = to_pixels(b64(encoded(rgb, mode="RGB")), "image 3")
    assert pixels.shape == (28, 28, 1)
    np.testing.assert_allclose(pixels, 150 / 255, atol=1 / 255)
    assert warning == "image 3: 64x40 resized to 28x28"


def test_floats_of_0_to_255_are_scaled_with_a_warning():
    pixels, warning = to_pixels(PIXELS.astype(np.float64).tolist(), "image 0")
    np.testing.assert_allclose(pixels, EXPECTED, atol=1e-6)
    assert "floats above 1 taken as 0-255 pixels" in warning


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((27, 28)).tolist(), r"image 0: array of shape \(27, 28\); expected 28x28"),
        (np.zeros(100).tolist(), r"array of shape \(100,\)"),
        (np.zeros((2, 28, 28)).tolist(), r"array of shape \(2, 28, 28\)"),
        ([[1, 2], [3]], "not an array of pixels"),
        ([300] * 784, "pixels from 300 to 300; expected 0-255 integers or 0-1 floats"),
        ([-1] * 784, "pixels from -1"),
        ([float("nan")] * 784, "finite"),
        ([True] * 784, "got bool"),
        (None, "no image"),
        (float("nan"), "no image"),
        (b64(b"not an image"), "cannot read image: not an image format PIL reads"),
        ("%%% not base64", "text that is not base64"),
        (b"\x89PNG\r\n\x1a\n broken", "cannot read image"),
        ({"a": 1}, "expected an encoded image"),
    ],
)
def test_a_bad_input_is_named(value, message):
    with pytest.raises(BadInput, match=message):
        to_pixels(value, "image 0")


def test_a_huge_image_is_refused_before_it_is_decoded():
    # 5000x5000 of one colour compresses to a few kB: a decompression bomb in miniature.
    bomb = encoded(np.zeros((5000, 5000), np.uint8))
    assert len(bomb) < 100_000
    with pytest.raises(BadInput, match="5000x5000 image is too large"):
        to_pixels(bomb, "image 0")


def test_a_batch_keeps_order_and_an_empty_one_is_refused():
    other = np.flipud(PIXELS)
    batch, warnings = prepare([b64(encoded(PIXELS)), other.tolist()])
    assert batch.shape == (2, 28, 28, 1) and warnings == [None, None]
    np.testing.assert_allclose(batch[1, ..., 0], other / 255.0, atol=1e-6)
    with pytest.raises(BadInput, match="empty batch"):
        prepare([])


def test_the_first_bad_image_of_a_batch_is_named_by_its_index():
    with pytest.raises(BadInput, match="image 2: array of shape"):
        prepare([PIXELS.tolist(), PIXELS.tolist(), [0] * 10])


def test_a_cell_holding_a_list_of_encoded_images_is_several_images():
    # MLflow hands {"inputs": ["<b64>", "<b64>"]} to the model as one cell holding the list.
    png = b64(encoded(PIXELS))
    assert images_of([[png, png]]) == [png, png]
    assert images_of([np.array([png, png])]) == [png, png]
    assert images_of([[]]) == []  # {"inputs": []}: no images, not an empty image
    array = PIXELS.tolist()
    assert images_of([array, png]) == [array, png]


def test_answers_name_the_most_likely_class_with_all_ten_probabilities():
    probs = np.full((2, 10), 0.01)
    probs[0, 9], probs[1, 1] = 0.91, 0.91
    out = answers(probs, [None, "image 1: 64x40 resized to 28x28"])
    assert [(a.class_index, a.class_name) for a in out] == [(9, CLASS_NAMES[9]), (1, "Trouser")]
    assert out[0].probabilities == pytest.approx(list(probs[0]))
    assert out[1].warning.endswith("resized to 28x28")
    with pytest.raises(ValueError, match=r"\(n, 10\)"):
        answers(np.zeros((1, 9)), [None])
