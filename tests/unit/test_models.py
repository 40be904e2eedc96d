"""The model registry: each net is the chapter's, layer by layer, and the registry's contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fmnist.stages.models import REGISTRY, build_model, get_spec

# A transcription of the chapter's Keras code, layer by layer: (layer type, the settings its
# code passes or leaves at Keras' defaults, the output shape in its model summary). Conv2D's
# default activation is linear, which is what the first two nets use.
_C = "Conv2D"


def conv(filters: int, padding: str, activation: str, shape: tuple[int, ...]) -> tuple:
    """A 3x3, stride-1 convolution as the chapter writes it."""
    settings = {
        "filters": filters,
        "kernel_size": (3, 3),
        "strides": (1, 1),
        "padding": padding,
        "activation": activation,
    }
    return (_C, settings, shape)


def pool(shape: tuple[int, ...]) -> tuple:
    """MaxPooling2D(2): a 2x2 window with stride 2."""
    return ("MaxPooling2D", {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid"}, shape)


def dense(units: int, activation: str) -> tuple:
    """A fully connected layer."""
    return ("Dense", {"units": units, "activation": activation}, (units,))


def drop(rate: float, shape: tuple[int, ...]) -> tuple:
    """Dropout at a rate."""
    return ("Dropout", {"rate": rate}, shape)


def flat(size: int) -> tuple:
    """Flatten."""
    return ("Flatten", {}, (size,))


CHAPTER_NETS: dict[str, list[tuple]] = {
    "conv_only": [
        conv(16, "valid", "linear", (26, 26, 16)),
        conv(32, "valid", "linear", (24, 24, 32)),
        conv(64, "valid", "linear", (22, 22, 64)),
        flat(22 * 22 * 64),
        dense(128, "relu"),
        dense(10, "softmax"),
    ],
    "pool_dropout": [
        conv(32, "valid", "linear", (26, 26, 32)),
        pool((13, 13, 32)),
        conv(64, "valid", "linear", (11, 11, 64)),
        pool((5, 5, 64)),
        conv(128, "valid", "linear", (3, 3, 128)),
        flat(3 * 3 * 128),
        dense(128, "relu"),
        drop(0.3, (128,)),
        dense(10, "softmax"),
    ],
    "vgg": [
        conv(32, "same", "relu", (28, 28, 32)),
        conv(64, "same", "relu", (28, 28, 64)),
        pool((14, 14, 64)),
        drop(0.5, (14, 14, 64)),
        conv(128, "same", "relu", (14, 14, 128)),
        conv(256, "valid", "relu", (12, 12, 256)),
        pool((6, 6, 256)),
        drop(0.5, (6, 6, 256)),
        flat(6 * 6 * 256),
        dense(512, "relu"),
        drop(0.5, (512,)),
        dense(256, "relu"),
        drop(0.5, (256,)),
        dense(10, "softmax"),
    ],
}
CHAPTER_NETS["vgg_augmented"] = CHAPTER_NETS["vgg"]  # same net, more data

CHAPTER_PARAMS = {
    "conv_only": 3_989_642,
    "pool_dropout": 241_546,
    "vgg": 5_240_842,
    "vgg_augmented": 5_240_842,
}


def describe(layer: Any) -> tuple:
    """A built layer as (type, the settings the transcription names, output shape)."""
    kind = type(layer).__name__
    config = layer.get_config()
    keys = {
        "Conv2D": ("filters", "kernel_size", "strides", "padding", "activation"),
        "MaxPooling2D": ("pool_size", "strides", "padding"),
        "Dense": ("units", "activation"),
        "Dropout": ("rate",),
        "Flatten": (),
    }[kind]
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in keys}
    return (kind, settings, tuple(layer.output.shape[1:]))


def test_registry_holds_the_four_chapter_models():
    assert set(REGISTRY) == set(CHAPTER_NETS)
    assert [n for n, s in REGISTRY.items() if s.augmented] == ["vgg_augmented"]


@pytest.mark.parametrize("name", sorted(CHAPTER_NETS))
def test_each_net_is_the_chapters_layer_by_layer(name):
    model = build_model(name)
    assert tuple(model.input.shape[1:]) == (28, 28, 1)
    built = [describe(layer) for layer in model.layers[1:]]  # [0] is the Input
    expected = CHAPTER_NETS[name]
    assert len(built) == len(expected), [b[0] for b in built]
    for i, (got, want) in enumerate(zip(built, expected, strict=True)):
        assert got == want, f"{name} layer {i}: {got} != chapter's {want}"


@pytest.mark.parametrize("name", sorted(CHAPTER_PARAMS))
def test_parameter_counts_equal_the_chapter(name):
    model = build_model(name)
    assert model.count_params() == CHAPTER_PARAMS[name]
    assert get_spec(name).chapter_params == CHAPTER_PARAMS[name]
    assert model.name == name


def test_first_two_nets_have_linear_convolutions():
    # The difference the parameter counts cannot see: conv(a*x) == a*conv(x) for linear
    # convolutions, so the stack up to Flatten is linear in its input (biases aside).
    import keras

    for name in ("conv_only", "pool_dropout"):
        model = build_model(name)
        flatten = next(layer for layer in model.layers if type(layer).__name__ == "Flatten")
        body = keras.Model(model.input, flatten.output)
        x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype("float32")
        zero = np.asarray(body(np.zeros_like(x)))
        f = np.asarray(body(x)) - zero
        g = np.asarray(body(-x)) - zero
        if name == "conv_only":  # no pooling: exactly odd (f(-x) == -f(x))
            np.testing.assert_allclose(g, -f, rtol=1e-4, atol=1e-4)
        assert (f < 0).any(), f"{name}: negative features before Flatten mean no ReLU"


@pytest.mark.parametrize("name", ["conv_only", "pool_dropout", "vgg"])
def test_models_map_images_to_class_probabilities(name):
    model = build_model(name)
    probs = np.asarray(model(np.zeros((3, 28, 28, 1), np.float32), training=False))
    assert probs.shape == (3, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match=r"unknown model 'resnet'.*conv_only"):
        build_model("resnet")


@pytest.mark.parametrize("name", ["conv_only", "pool_dropout", "vgg"])
def test_a_builder_called_alone_names_its_model_after_the_registry(name):
    assert REGISTRY[name].build().name == name
