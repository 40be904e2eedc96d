"""The model registry: a name maps to a builder and to what the chapter reports for it.

Plain keras only (no prefect, no mlflow), so it also runs on the JAX backend on GPU workers.
keras is imported inside the builders: importing the registry to list or validate model
names stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder, the data it trains on, and the chapter's figures."""

    name: str
    build: Callable[[str], keras.Model]
    description: str
    chapter_params: int
    chapter_test_accuracy: float
    augmented: bool = False


def _inputs():
    import keras

    return keras.Input(shape=INPUT_SHAPE, name="image")


def _classifier(x):
    """The 10-way softmax head, in float32 whatever the dtype policy.

    Under a mixed precision policy the other layers compute in 16 bits; a softmax (and the
    cross-entropy after it) in float16 under- and overflows, hence Keras' mixed precision
    guide's float32 output layer. Under the default float32 policy this changes nothing.
    """
    from keras import layers

    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)


def build_conv_only(name: str = "conv_only") -> keras.Model:
    """Three valid 3x3 convolutions straight into a dense head: no pooling, no dropout."""
    import keras
    from keras import layers

    inputs = _inputs()
    # No activation on the convolutions: the chapter's code leaves Keras' default (linear).
    x = layers.Conv2D(16, 3)(inputs)
    x = layers.Conv2D(32, 3)(x)
    x = layers.Conv2D(64, 3)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = _classifier(x)
    return keras.Model(inputs, outputs, name=name)


def build_pool_dropout(name: str = "pool_dropout") -> keras.Model:
    """Convolutions with max pooling in between and dropout before the classifier."""
    import keras
    from keras import layers

    inputs = _inputs()
    # Linear convolutions again, as in the chapter's code; only the VGG net uses ReLU there.
    x = layers.Conv2D(32, 3)(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3)(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(128, 3)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = _classifier(x)
    return keras.Model(inputs, outputs, name=name)


def build_vgg(name: str = "vgg") -> keras.Model:
    """The chapter's VGG-like net: paired convolutions, pooling, heavy dropout."""
    import keras
    from keras import layers

    inputs = _inputs()
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(256, 3, padding="valid", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = _classifier(x)
    return keras.Model(inputs, outputs, name=name)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "conv_only",
            build_conv_only,
            "Conv2D 16-32-64 (3x3, valid, linear), Flatten, Dense 128 relu, Dense 10 softmax",
            chapter_params=3_989_642,
            chapter_test_accuracy=0.8521,
        ),
        ModelSpec(
            "pool_dropout",
            build_pool_dropout,
            "Conv32-MaxPool-Conv64-MaxPool-Conv128 (linear), Flatten, Dense 128 relu, Dropout 0.3, "
            "Dense 10",
            chapter_params=241_546,
            chapter_test_accuracy=0.8909,
        ),
        ModelSpec(
            "vgg",
            build_vgg,
            "Conv32/64 same, Pool, Drop .5, Conv128 same, Conv256 valid, Pool, Drop .5, "
            "Dense 512, Drop .5, Dense 256, Drop .5, Dense 10",
            chapter_params=5_240_842,
            chapter_test_accuracy=0.9252,
        ),
        ModelSpec(
            "vgg_augmented",
            # Same net as vgg; what differs is the data (originals + augmented images).
            build_vgg,
            "The vgg net trained on the original images plus the augmented ones",
            chapter_params=5_240_842,
            chapter_test_accuracy=0.9288,
            augmented=True,
        ),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name; the error lists the names there are."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}") from None


def build_model(name: str) -> keras.Model:
    """Build a fresh, uncompiled model by registry name."""
    spec = get_spec(name)
    return spec.build(spec.name)
