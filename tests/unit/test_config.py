"""Config profiles and validation: every error names what is wrong."""

from __future__ import annotations

import pytest

from fmnist.conf import (
    ConfigError,
    available_profiles,
    config_from_dict,
    load_config,
    parse_overrides,
)
from fmnist.stages.models import REGISTRY

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
    from fmnist.conf import Config

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


def test_duplicate_model_names_are_rejected():
    with pytest.raises(ConfigError, match="models listed twice"):
        load_config("smoke", ["train.models=[vgg, conv_only, vgg]"], known_models=KNOWN)
    with pytest.raises(ConfigError, match="models listed twice"):
        load_config("smoke", ["train.models=[vgg, vgg]"])  # also without a registry


@pytest.mark.parametrize(
    "override",
    [
        "train.epochs=0",
        "train.batch_size=0",
        "train.learning_rate=0",
        "train.validation_split=0",
        "train.validation_split=1",
        "data.train_subset=0",
        "data.train_subset=60001",
        "data.test_subset=10001",
        "augment.n_augmented=0",
        "augment.zoom=1",
        "seed=-1",
    ],
)
def test_boundaries_are_rejected(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        load_config("smoke", [override], known_models=KNOWN)


@pytest.mark.parametrize(
    "override",
    ["train.epochs=1", "data.train_subset=60000", "data.test_subset=10000", "seed=0"],
)
def test_the_smallest_and_largest_valid_values_are_accepted(override):
    key, value = override.split("=")
    cfg = load_config("smoke", [override], known_models=KNOWN)
    section, _, name = key.rpartition(".")
    node = getattr(cfg, section) if section else cfg
    assert getattr(node, name) == int(value)


def test_known_models_are_checked_only_when_given():
    cfg = load_config("smoke", ["train.models=[resnet]"])
    assert cfg.train.models == ["resnet"]
    with pytest.raises(ConfigError, match=r"unknown model\(s\) 'resnet'; known: conv_only"):
        load_config("smoke", ["train.models=[resnet]"], known_models=KNOWN)


def test_a_profile_that_extends_itself_is_an_error(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\n")
    b.write_text(f"extends: {a}\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(str(a))


@pytest.mark.parametrize(
    ("text", "message"),
    [("train: [unclosed\n", "not valid YAML"), ("- a list\n", "mapping at the top level")],
)
def test_a_broken_profile_file_is_named(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(str(path))
    assert str(path) in str(info.value)


def test_a_missing_profile_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"profile file not found: .*nope\.yml"):
        load_config(str(tmp_path / "nope.yml"))


def test_extending_merges_sections_key_by_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\ndata:\n  test_subset: 100\n")
    cfg, smoke = load_config(str(path)), load_config("smoke")
    assert cfg.data.test_subset == 100
    # The rest of the section is the base's, and the base's base's (book's sources).
    assert cfg.data.train_subset == smoke.data.train_subset
    assert cfg.data.sources == smoke.data.sources
    assert cfg.profile == "mine"  # its own name, not the base's "smoke"


def test_a_profile_file_names_itself_if_it_says_so(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\nprofile: custom\n")
    assert load_config(str(path)).profile == "custom"


def test_an_empty_profile_file_is_an_empty_mapping(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="data: Field required") as info:
        load_config(str(path))
    assert "got" not in str(info.value)  # nothing was given, so nothing to show


def test_overrides_as_a_mapping_are_not_parsed_again():
    cfg = load_config("smoke", {"train.epochs": 4, "tracking.experiment": "1"})
    assert cfg.train.epochs == 4
    assert cfg.tracking.experiment == "1"  # a string, not YAML's integer


def test_an_override_below_a_value_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'train\.epochs' is not a section"):
        load_config("smoke", ["train.epochs.x=1"])
    # Not set by the profile: the schema says it has no keys below it.
    path = tmp_path / "minimal.yaml"
    path.write_text("data:\n  sources: [here]\ntrain:\n  models: [vgg]\n")
    assert load_config(str(path)).orchestration.timeout_s is None
    with pytest.raises(ConfigError) as info:
        load_config(str(path), ["orchestration.timeout_s.x=1"])
    assert str(info.value) == (
        "unknown config key 'orchestration.timeout_s.x': 'x' is not in "
        "orchestration.timeout_s (none (not a section))"
    )


def test_an_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        load_config("smoke", ["schedule=1"])
    assert str(info.value).startswith(
        "unknown config key 'schedule': 'schedule' is not in the top level (augment, data, "
    )


def test_an_override_of_a_nested_section():
    cfg = load_config("smoke", ["deploy.schedule.active=false", "deploy.schedule.cron=0 3 * * *"])
    assert cfg.deploy.schedule.active is False
    assert cfg.deploy.schedule.cron == "0 3 * * *"
    assert load_config("smoke").deploy.schedule.cron == "0 2 * * *"


def test_an_override_of_a_section_by_a_value_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        load_config("smoke", {"train": 3, "train.epochs": 2})


def test_a_bad_value_is_shown_with_its_key():
    with pytest.raises(ConfigError) as info:
        load_config("smoke", ["train.epochs=many", "data.http_retries=11"])
    message = str(info.value)
    assert message.startswith("invalid configuration:\n  ")
    assert "train.epochs: Input should be a valid integer" in message
    assert "(got 'many')" in message
    assert "data.http_retries: Input should be less than or equal to 10 (got 11)" in message


@pytest.mark.parametrize(
    ("items", "parsed"),
    [
        ([" train.epochs = 3"], {"train.epochs": 3}),
        (["a="], {"a": ""}),
        (["a=  "], {"a": ""}),
        (["a=null"], {"a": None}),
        (["a=x=y"], {"a": "x=y"}),
    ],
)
def test_parse_overrides_edge_cases(items, parsed):
    assert parse_overrides(items) == parsed


@pytest.mark.parametrize("item", ["=3", " =3", "novalue"])
def test_parse_overrides_needs_a_key_and_a_value(item):
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides([item])


def test_parse_overrides_names_bad_yaml():
    with pytest.raises(ConfigError, match=r"override 'a=\[1, 2': value is not valid YAML"):
        parse_overrides(["a=[1, 2"])


def test_profiles_are_listed_sorted():
    names = available_profiles()
    assert names == sorted(names) and "smoke" in names


def test_flat_has_every_setting_with_dotted_keys():
    cfg = load_config("smoke")
    flat = cfg.flat()
    assert flat["profile"] == "smoke"
    assert flat["deploy.schedule.cron"] == "0 2 * * *"
    assert flat["data.sources"] == ",".join(cfg.data.sources)
    assert flat["data.test_subset"] == 500
    assert flat["orchestration.timeout_s"] is None
    assert not any(isinstance(v, dict | list) for v in flat.values())
    assert len(flat) == _count_leaves(cfg.model_dump())


def _count_leaves(tree: dict) -> int:
    return sum(_count_leaves(v) if isinstance(v, dict) else 1 for v in tree.values())


def test_a_resolved_config_validates_again_from_its_dict():
    cfg = load_config("smoke", ["train.epochs=2"], known_models=KNOWN)
    again = config_from_dict(cfg.model_dump(), known_models=KNOWN)
    assert again == cfg


def test_config_from_dict_checks_models_only_when_known_models_are_given():
    data = load_config("smoke").model_dump()
    data["train"]["models"] = ["resnet"]
    assert config_from_dict(data).train.models == ["resnet"]
    with pytest.raises(ConfigError, match=r"unknown model\(s\) 'resnet'"):
        config_from_dict(data, known_models=KNOWN)


def test_config_from_dict_names_what_is_wrong():
    data = load_config("smoke").model_dump()
    data["train"]["epochs"] = 0
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).startswith("invalid configuration:\n  train.epochs: ")
    assert "(got 0)" in str(info.value)


def test_the_default_profile_is_quick():
    assert load_config().profile == "quick"
    assert load_config() == load_config("quick")


def test_an_unknown_profile_lists_every_shipped_one():
    with pytest.raises(ConfigError) as info:
        load_config("turbo")
    assert str(info.value) == (
        f"unknown profile 'turbo'; available: {', '.join(available_profiles())}"
    )


def test_a_cycle_of_profiles_names_the_chain(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\n")
    b.write_text(f"extends: {a}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(a))
    assert str(info.value) == f"profile '{a}' extends itself: {a} -> {b}"


def test_a_profile_may_extend_one_without_a_name(tmp_path):
    base = tmp_path / "minimal.yaml"
    base.write_text("data:\n  sources: [here]\ntrain:\n  models: [vgg]\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base}\ntrain:\n  epochs: 3\n")
    cfg = load_config(str(child))
    assert (cfg.profile, cfg.train.epochs, cfg.train.models) == ("child", 3, ["vgg"])


def test_a_value_where_the_base_has_a_section_is_a_validation_error(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("extends: smoke\ntrain: 3\n")
    with pytest.raises(ConfigError, match="train: Input should be a valid dictionary"):
        load_config(str(path))


def test_a_whole_config_error_is_named_config():
    with pytest.raises(ConfigError) as info:
        load_config("smoke", ["data.train_subset=1"])
    assert str(info.value).startswith(
        "invalid configuration:\n  config: Value error, data.train_subset=1 leaves no training"
    )


def test_each_error_is_on_its_own_line(tmp_path):
    path = tmp_path / "three.yaml"
    path.write_text(
        "extends: smoke\ntrain:\n  epochs: many\n  optimiser: x\ndata:\n  http_retries: 11\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    header, *lines = str(info.value).split("\n  ")
    assert header == "invalid configuration:"
    assert sorted(line.split(":")[0] for line in lines) == [
        "data.http_retries",
        "train.epochs",
        "unknown config key 'train.optimiser'",
    ]


def test_a_missing_setting_is_named_without_a_value(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "  data: Field required\n" in str(info.value) + "\n"
