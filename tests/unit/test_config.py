"""Config profiles and validation: every error names what is wrong."""

from __future__ import annotations

import pytest

from conf import ConfigError, available_profiles, load_config, parse_overrides
from stages.models import REGISTRY

KNOWN = list(REGISTRY)


def test_profiles_are_shipped():
    assert {"book", "fast", "quick", "smoke"} <= set(available_profiles())


def test_book_is_the_chapter_exactly():
    cfg = load_config("book", known_models=KNOWN)
    assert cfg.train.models == ["conv_only", "pool_dropout", "vgg", "vgg_augmented"]
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.validation_split) == (25, 32, 0.25)
    assert cfg.train.optimizer == "adam"
    assert cfg.data.train_subset is None and cfg.data.test_subset is None
    assert cfg.augment.n_augmented == 30_000
    a = cfg.augment
    assert (a.rotation_degrees, a.zoom, a.shear_degrees) == (10, 0.10, 0.5)
    assert (a.width_shift, a.height_shift, a.horizontal_flip, a.vertical_flip) == (
        0.10,
        0.10,
        True,
        False,
    )
    assert cfg.data.sources[0] == "/usr/share/datasets/fashion-mnist"


def test_quick_trains_all_four_and_tests_on_the_full_test_set():
    cfg = load_config("quick", known_models=KNOWN)
    assert cfg.profile == "quick"
    assert cfg.train.models == list(REGISTRY)
    assert cfg.data.test_subset is None
    assert cfg.data.train_subset is not None and cfg.data.train_subset < 60_000


def test_overrides_are_typed():
    cfg = load_config(
        "smoke",
        ["train.epochs=3", "train.models=[vgg, conv_only]", "data.test_subset=null", "seed=7"],
        known_models=KNOWN,
    )
    assert cfg.train.epochs == 3
    assert cfg.train.models == ["vgg", "conv_only"]
    assert cfg.data.test_subset is None
    assert cfg.seed == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], "unknown config key 'train.epoch'"),
        (["trian.epochs=3"], "unknown config key 'trian.epochs'"),
        (["train.epochs=-1"], "train.epochs: Input should be greater than 0"),
        (["train.epochs=many"], "train.epochs: Input should be a valid integer"),
        (["train.models=[vgg, resnet]"], "unknown model(s) 'resnet'"),
        (["train.models=[]"], "train.models"),
        (["train.optimizer=sgd"], "train.optimizer"),
        (["train.validation_split=1.5"], "train.validation_split"),
        (["data.train_subset=1"], "leaves no training or validation samples"),
        (["epochs"], "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config("smoke", overrides, known_models=KNOWN)
    assert message in str(info.value)


def test_unknown_key_in_a_profile_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\ntrain:\n  epoches: 2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoches'"):
        load_config(str(path), known_models=KNOWN)


def test_profile_file_extends_a_shipped_profile(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\ntrain:\n  epochs: 2\n")
    cfg = load_config(str(path), known_models=KNOWN)
    assert cfg.profile == "mine"
    assert cfg.train.epochs == 2
    assert cfg.train.batch_size == load_config("smoke").train.batch_size


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown profile 'turbo'.*quick"):
        load_config("turbo")


def test_parse_overrides_keeps_strings_and_numbers():
    assert parse_overrides(["a.b=1", "c=0.5", "d=text", "e=[1, 2]"]) == {
        "a.b": 1,
        "c": 0.5,
        "d": "text",
        "e": [1, 2],
    }


def test_flat_keys_for_mlflow_params():
    flat = load_config("smoke").flat()
    assert flat["train.epochs"] == 1
    assert flat["train.models"] == "conv_only,pool_dropout,vgg,vgg_augmented"
    assert "augment.rotation_degrees" in flat


def _float_fields(model: type, prefix: str = "") -> list[str]:
    """Dotted keys of every float setting in the schema, found from its fields."""
    import types
    import typing

    from pydantic import BaseModel

    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        args = typing.get_args(ann) if isinstance(ann, types.UnionType) else ()
        members = args or (ann,)
        if float in members:
            keys.append(key)
        for member in members:
            if isinstance(member, type) and issubclass(member, BaseModel):
                keys += _float_fields(member, f"{key}.")
    return keys


def _schema_float_fields() -> list[str]:
    from conf import Config

    return _float_fields(Config)


def test_the_schema_has_float_fields_to_check():
    # Guards the parametrisation below against finding nothing.
    assert {"train.learning_rate", "augment.zoom", "data.http_timeout_s"} <= set(
        _schema_float_fields()
    )


@pytest.mark.parametrize("key", _schema_float_fields())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ".inf", ".nan"])
def test_every_float_setting_rejects_nan_and_infinity(key, value):
    with pytest.raises(ConfigError) as info:
        load_config("smoke", [f"{key}={value}"], known_models=KNOWN)
    assert key in str(info.value)


def test_promotion_floors_are_well_above_chance():
    # Chance is 0.10 on ten classes; quick reaches 0.85+ and the chapter 0.85-0.93.
    assert load_config("quick").tracking.promotion_floor >= 0.8
    assert load_config("book").tracking.promotion_floor >= 0.8
    assert 0.1 < load_config("smoke").tracking.promotion_floor < 0.5


def test_book_runs_the_chapters_steps_as_keras_does_by_default():
    cfg = load_config("book", known_models=KNOWN)
    assert cfg.keras_backend == "tensorflow"
    t = cfg.train
    assert (t.steps_per_execution, t.jit_compile, t.precision) == (1, "auto", "float32")
    assert cfg.tracking.system_metrics_interval_s > 0


def test_fast_is_the_book_in_larger_compiled_steps_with_a_scaled_learning_rate():
    book, fast = load_config("book", known_models=KNOWN), load_config("fast", known_models=KNOWN)
    t = fast.train
    assert (t.batch_size, t.steps_per_execution, t.jit_compile) == (256, 4, True)
    # Square-root scaling for Adam: lr * sqrt(batch / 32), rounded to two digits.
    assert t.learning_rate == pytest.approx(0.001 * (256 / 32) ** 0.5, rel=0.02)
    assert t.epochs == book.train.epochs and t.models == book.train.models
    assert fast.data == book.data and fast.augment == book.augment


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.precision=float16", "train.precision"),
        ("train.jit_compile=maybe", "train.jit_compile"),
        ("keras_backend=mxnet", "keras_backend"),
        ("tracking.system_metrics_interval_s=-1", "tracking.system_metrics_interval_s"),
    ],
)
def test_fast_path_settings_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", [override])


def test_backend_and_precision_overrides():
    cfg = load_config("smoke", ["keras_backend=jax", "train.precision=mixed_bfloat16"])
    assert cfg.keras_backend == "jax" and cfg.train.precision == "mixed_bfloat16"
    assert cfg.flat()["keras_backend"] == "jax"
