"""The model registry: exact parameter counts from the chapter, outputs, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models import REGISTRY, build_model, get_spec

CHAPTER_PARAMS = {
    "conv_only": 3_989_642,
    "pool_dropout": 241_546,
    "vgg": 5_240_842,
    "vgg_augmented": 5_240_842,
}


def test_registry_holds_the_four_chapter_models():
    assert set(REGISTRY) == set(CHAPTER_PARAMS)
    assert [n for n, s in REGISTRY.items() if s.augmented] == ["vgg_augmented"]


@pytest.mark.parametrize("name", sorted(CHAPTER_PARAMS))
def test_parameter_counts_equal_the_chapter(name):
    model = build_model(name)
    assert model.count_params() == CHAPTER_PARAMS[name]
    assert get_spec(name).book_params == CHAPTER_PARAMS[name]
    assert model.name == name


@pytest.mark.parametrize("name", ["conv_only", "pool_dropout", "vgg"])
def test_models_map_images_to_class_probabilities(name):
    model = build_model(name)
    probs = np.asarray(model(np.zeros((3, 28, 28, 1), np.float32), training=False))
    assert probs.shape == (3, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_vgg_layer_sequence():
    kinds = [type(layer).__name__ for layer in build_model("vgg").layers[1:]]
    assert kinds == [
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
        "Dropout",
        "Dense",
    ]


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match=r"unknown model 'resnet'.*conv_only"):
        build_model("resnet")
