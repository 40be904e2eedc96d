"""The settings the benchmark runs with: a mirror of conf/'s book and fast profiles.

The benchmark's GPU mode runs on bare machines with keras, numpy and a backend only (no
pydantic, no yaml), so it cannot read conf/. tests/unit/test_bench.py checks that these
dictionaries equal the profiles, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

MODELS: tuple[str, ...] = ("conv_only", "pool_dropout", "vgg", "vgg_augmented")

_AUGMENT: dict[str, Any] = {
    "rotation_degrees": 10.0,
    "zoom": 0.10,
    "shear_degrees": 0.5,
    "width_shift": 0.10,
    "height_shift": 0.10,
    "horizontal_flip": True,
    "vertical_flip": False,
    "fill_mode": "nearest",
}

_BOOK: dict[str, Any] = {
    "seed": 42,
    "models": list(MODELS),
    # data
    "train_subset": None,
    "test_subset": None,
    # augmentation
    "n_augmented": 30_000,
    "augment": dict(_AUGMENT),
    "augment_batch_size": 1024,
    # fit (stages.train.FitParams' fields)
    "epochs": 25,
    "batch_size": 32,
    "validation_split": 0.25,
    "learning_rate": 0.001,
    "steps_per_execution": 1,
    "jit_compile": "auto",
    "precision": "float32",
    "eval_batch_size": 256,
}

PROFILES: dict[str, dict[str, Any]] = {
    "book": _BOOK,
    # conf/fast.yaml: batch 256, learning rate 0.001 * sqrt(256 / 32) (square-root rule for
    # Adam), four steps per compiled call, XLA on.
    "fast": {
        **_BOOK,
        "batch_size": 256,
        "learning_rate": 0.0028,
        "steps_per_execution": 4,
        "jit_compile": True,
    },
}

# The CPU mode: all four models on a seeded subset, 2 epochs (the first pays for tracing and
# compilation, the second is the steady one), the chapter's settings otherwise.
QUICK: dict[str, Any] = {
    "train_subset": 4_000,
    "test_subset": 2_000,
    "n_augmented": 2_000,  # the chapter's 2:1 ratio of originals to augmented images
    "epochs": 2,
}

# The plain-Keras baseline: model.fit at the chapter's settings, nothing else.
BASELINE: dict[str, Any] = {"batch_size": 32, "learning_rate": 0.001, "validation_split": 0.25}

FIT_FIELDS: tuple[str, ...] = (
    "epochs",
    "batch_size",
    "validation_split",
    "learning_rate",
    "steps_per_execution",
    "jit_compile",
    "precision",
)

# The chapter's Tesla K80 figures: seconds per epoch and the training images per epoch
# (45,000 = 60,000 minus the 0.25 validation split; 67,500 with the 30,000 augmented).
K80_SECONDS_PER_EPOCH: dict[str, tuple[float, int]] = {
    "conv_only": (7.0, 45_000),
    "vgg": (9.0, 45_000),
    "vgg_augmented": (14.0, 67_500),
}


def resolve(profile: str, *, quick: bool = False, **changes: Any) -> dict[str, Any]:
    """A profile's settings, shrunk to the quick mode if asked, with explicit changes."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    settings = {**PROFILES[profile], **(QUICK if quick else {})}
    settings.update({k: v for k, v in changes.items() if v is not None})
    unknown = set(settings) - set(PROFILES["book"])
    if unknown:
        raise ValueError(f"unknown benchmark settings: {sorted(unknown)}")
    return settings
