"""Per-epoch checkpoints: atomic, verified, resumed from exactly where they stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmnist.stages.checkpoint import (
    RECORD,
    CheckpointError,
    find_checkpoint,
    find_checkpoints,
    restore_checkpoint,
    resume_from,
    save_checkpoint,
    weights_name,
)
from fmnist.stages.digest import sha256_file
from fmnist.stages.models import build_model
from fmnist.stages.train import compile_model, seed_everything, train_model
from tests.helpers import fit_params, learnable_images
from tests.standins import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return learnable_images(8)  # 80 samples, every class


class Stop(Exception):
    """Raised from the epoch report to cut a fit short, as a kill would."""


def test_a_fit_cut_short_resumes_after_its_last_checkpoint(tiny, tmp_path):
    x, y = tiny
    folder = tmp_path / "ckpt"
    reported: list[int] = []

    def stop_after_two(epoch: int, metrics: dict[str, float]) -> None:
        reported.append(epoch)
        if epoch == 2:  # after epoch 2's report, before its checkpoint
            raise Stop

    seed_everything(0)
    with pytest.raises(Stop):
        train_model(
            tiny_model(), x, y, fit_params(epochs=4), on_epoch=stop_after_two,
            seed=0, checkpoint_dir=folder,
        )  # fmt: skip
    assert reported == [1, 2]
    assert find_checkpoint(folder).epoch == 1  # epoch 2 never got its checkpoint

    seed_everything(0)
    resumed: list[int] = []
    result = train_model(
        tiny_model(), x, y, fit_params(epochs=4),
        on_epoch=lambda e, m: resumed.append(e), seed=0, checkpoint_dir=folder,
    )  # fmt: skip
    assert resumed == [2, 3, 4]  # epoch 2 again, then on; epoch 1 not repeated
    assert result.initial_epoch == 1 and result.epochs_run == 3
    assert find_checkpoint(folder).epoch == 4
    assert not [p for p in folder.iterdir() if "partial" in p.name]  # nothing torn left


def test_a_restored_model_is_the_saved_one_optimizer_included(tiny, tmp_path):
    x, y = tiny
    trained = train_model(tiny_model(), x, y, fit_params(epochs=1), seed=1).model
    checkpoint = save_checkpoint(trained, tmp_path, epoch=1)
    fresh = compile_model(tiny_model(), fit_params())
    assert restore_checkpoint(fresh, find_checkpoint(tmp_path)) == 1
    np.testing.assert_allclose(
        np.asarray(fresh.predict(x[:4], verbose=0)), np.asarray(trained.predict(x[:4], verbose=0))
    )
    assert int(fresh.optimizer.iterations.numpy()) == int(trained.optimizer.iterations.numpy())
    assert checkpoint.epoch == 1 and len(checkpoint.sha256) == 64


def test_a_torn_checkpoint_costs_one_epoch_not_the_model(tiny, tmp_path):
    x, _ = tiny
    model = compile_model(build_model("pool_dropout"), fit_params())
    model(x[:1])
    for epoch in (1, 2, 3):
        save_checkpoint(model, tmp_path, epoch=epoch)
    assert sorted(p.name for p in tmp_path.glob("*.weights.h5")) == [
        weights_name(2),
        weights_name(3),
    ]  # the newest and the one before it
    newest = tmp_path / weights_name(3)
    newest.write_bytes(newest.read_bytes()[:-100])  # torn
    assert find_checkpoint(tmp_path).epoch == 2
    warnings: list[str] = []
    fresh = compile_model(build_model("pool_dropout"), fit_params())
    fresh(x[:1])
    assert resume_from(fresh, tmp_path, warnings.append) == 2
    assert "not the weights its record names" in warnings[0]


def test_a_damaged_checkpoint_that_matches_its_digest_falls_back(tiny, tmp_path):
    x, _ = tiny
    model = compile_model(build_model("pool_dropout"), fit_params())
    model(x[:1])
    save_checkpoint(model, tmp_path, epoch=1)
    save_checkpoint(model, tmp_path, epoch=2)
    # Damaged before its digest was taken (a full disk): the record vouches for garbage.
    (tmp_path / weights_name(2)).write_bytes(b"not an HDF5 file")
    record = json.loads((tmp_path / RECORD).read_text())
    record["kept"][0]["sha256"] = sha256_file(tmp_path / weights_name(2))
    (tmp_path / RECORD).write_text(json.dumps(record))
    warnings: list[str] = []
    assert resume_from(model, tmp_path, warnings.append) == 1
    assert "unreadable" in warnings[0]


def test_an_unusable_or_foreign_checkpoint_means_training_starts_over(tiny, tmp_path):
    x, y = tiny
    other = compile_model(build_model("conv_only"), fit_params())
    other(x[:1])
    save_checkpoint(other, tmp_path, epoch=3)  # another architecture
    warnings: list[str] = []
    result = train_model(
        tiny_model(), x, y, fit_params(epochs=1), seed=0,
        checkpoint_dir=tmp_path, on_warning=warnings.append,
    )  # fmt: skip
    assert result.initial_epoch == 0 and result.epochs_run == 1
    assert "does not fit this model" in warnings[0]
    assert warnings[-1].endswith("training from epoch 1")
    assert [c.epoch for c in find_checkpoints(tmp_path)] == [1]  # a good one now, alone
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        find_checkpoint(tmp_path)
    assert resume_from(other, tmp_path, warnings.append) == 0
    assert find_checkpoints(tmp_path) == []  # cleared: the next save starts a clean record


def test_no_checkpoint_means_epoch_zero(tmp_path):
    assert find_checkpoint(tmp_path) is None
