"""Reading images for `fmnist predict`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fmnist.stages.images import ImageError, read_image


def test_28x28_grey_png_is_read_as_is(tmp_path):
    pixels = np.arange(784, dtype=np.uint16).reshape(28, 28) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "a.png")
    arr, warning = read_image(tmp_path / "a.png")
    assert warning is None
    assert arr.shape == (28, 28, 1) and arr.dtype == np.float32
    assert np.allclose(arr[..., 0], pixels / 255.0)


def test_other_sizes_and_colour_are_converted_with_a_warning(tmp_path):
    Image.new("RGB", (64, 40), (255, 255, 255)).save(tmp_path / "b.png")
    arr, warning = read_image(tmp_path / "b.png")
    assert arr.shape == (28, 28, 1)
    assert np.allclose(arr, 1.0)
    assert "64x40 resized to 28x28" in warning


@pytest.mark.parametrize("content", [b"not an image", b""])
def test_unreadable_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "c.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=r"c\.png: cannot read image"):
        read_image(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read image"):
        read_image(tmp_path / "missing.png")
