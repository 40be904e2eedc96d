"""The benchmark's own pieces: its settings mirror conf/, its FLOP count, its report."""

from __future__ import annotations

import pytest

from fmnist.bench.flops import forward_flops, layer_flops, training_flops
from fmnist.bench.run import device_slug, summarise, to_markdown
from fmnist.bench.settings import FIT_FIELDS, PROFILES, resolve
from fmnist.conf import load_config
from fmnist.stages.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_settings_mirror_the_profile_of_the_same_name(profile):
    cfg = load_config(profile)
    mine = PROFILES[profile]
    train = cfg.train.model_dump()
    for key in (*FIT_FIELDS, "eval_batch_size", "models"):
        assert mine[key] == train[key], key
    assert mine["seed"] == cfg.seed
    assert (mine["train_subset"], mine["test_subset"]) == (
        cfg.data.train_subset,
        cfg.data.test_subset,
    )
    augment = cfg.augment.model_dump()
    assert mine["n_augmented"] == augment.pop("n_augmented")
    assert mine["augment_batch_size"] == augment.pop("batch_size")
    assert mine["augment"] == augment


def test_quick_mode_shrinks_the_data_not_the_settings():
    quick, book = resolve("book", quick=True), resolve("book")
    assert quick["train_subset"] < 60_000 and quick["epochs"] < book["epochs"]
    assert {k: quick[k] for k in FIT_FIELDS if k != "epochs"} == {
        k: book[k] for k in FIT_FIELDS if k != "epochs"
    }
    with pytest.raises(ValueError, match="unknown benchmark settings"):
        resolve("book", epoch=3)


def test_flops_of_conv_only_by_hand():
    model = build_model("conv_only")
    macs = (
        26 * 26 * 16 * 3 * 3 * 1  # Conv2D 16, valid
        + 24 * 24 * 32 * 3 * 3 * 16
        + 22 * 22 * 64 * 3 * 3 * 32
        + 22 * 22 * 64 * 128  # Dense 128 on the flattened 22x22x64
        + 128 * 10
    )
    assert sum(forward_flops(model).values()) == 2 * macs
    assert training_flops(model, 100, 10) == pytest.approx(2 * macs * (3 * 100 + 10))


def test_pooling_counts_its_windows_and_every_net_has_a_count():
    model = build_model("pool_dropout")
    pool = next(layer for layer in model.layers if type(layer).__name__ == "MaxPooling2D")
    assert layer_flops(pool) == 13 * 13 * 32 * 4
    for name in MODEL_NAMES:
        assert sum(forward_flops(build_model(name)).values()) > 0


def test_a_layer_with_weights_and_no_rule_is_an_error():
    import keras

    layer = keras.layers.LayerNormalization()
    layer.build((None, 8))
    with pytest.raises(ValueError, match="no FLOP rule"):
        layer_flops(layer)


def _measured(rate: float, **extra: float) -> dict:
    # A worker's result, reduced to what summarise and the table read.
    return {
        "train_samples": 300,
        "epochs": 2,
        "first_epoch_s": 3.0,
        "steady_epoch_s": 300 / rate,
        "compile_s": 3.0 - 300 / rate,
        "steady_samples_per_s": rate,
        "samples_per_s": rate,
        "samples_per_cpu_s": rate / 2,
        "steady_tflops": 0.01,
        "peak_rss_mb": 900.0,
        "fit_s": 600 / rate,
        "test_accuracy": 0.5,
        **extra,
    }


def test_ratios_side_by_side_and_against_the_k80():
    row = summarise("vgg", _measured(200.0), _measured(100.0))
    assert row["ours_vs_plain_steady"] == pytest.approx(2.0)
    assert row["ours_vs_plain_cpu"] == pytest.approx(2.0)
    assert row["vs_k80"] == pytest.approx(200.0 / (45_000 / 9.0))
    assert "vs_k80" not in summarise("pool_dropout", _measured(1.0), None)


def test_markdown_has_one_row_per_model():
    rows = [summarise(m, _measured(100.0), _measured(100.0)) for m in MODEL_NAMES]
    context = {
        "device": "cpu",
        "backend": "tensorflow",
        "profile": "quick",
        "date": "today",
        "host": "h",
        "cpu_count": 2,
        "keras_version": "3",
        "precision": "float32",
        "batch_size": 32,
        "steps_per_execution": 1,
        "jit_compile": "auto",
        "epochs": 2,
        "train_subset": 4000,
        "n_augmented": 2000,
        "wall_s": 1.0,
    }
    text = to_markdown({"context": context, "models": rows, "totals": {"ours_fit_s": 1.0}})
    assert all(f"| {m} |" in text for m in MODEL_NAMES)
    assert device_slug("gpu:NVIDIA H200", 16) == "gpu-nvidia-h200"
    assert device_slug("cpu", 2) == "cpu2"
