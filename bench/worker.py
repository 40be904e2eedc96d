"""One benchmark measurement in its own process: one model, one code path.

    python -m fmnist.bench.worker --model vgg --runner ours --settings '{...}' --data DIR --out FILE

runner `ours` is the project's trainer (stages.train: build_for_training + train_model, the
code the pipeline runs); runner `plain` is model.fit at the chapter's settings on the same
numpy arrays with nothing else (a callback that only reads the clock at each epoch's start
and end, which Keras runs between epochs, never per batch). Both build the same net from
stages.models and train on the same data (stages.load, and stages.augment for
vgg_augmented). Imports keras, numpy and the backend only: no prefect, mlflow, pydantic or
yaml (checked and reported in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FORBIDDEN = ("prefect", "mlflow", "pydantic", "yaml")


def load_data(settings: dict[str, Any], data_dir: Path, cache_dir: Path, augmented: bool):
    """The training arrays (originals, then augmented ones if asked) and the test set."""
    from fmnist.stages.augment import AugmentParams, augment_dataset
    from fmnist.stages.download import fetch_all
    from fmnist.stages.load import load_dataset

    paths = fetch_all([str(data_dir)], cache_dir)
    ds = load_dataset(
        paths,
        train_subset=settings["train_subset"],
        test_subset=settings["test_subset"],
        seed=settings["seed"],
    )
    x, y = ds.x_train, ds.y_train
    augment_s = 0.0
    if augmented:
        t0 = time.perf_counter()
        xa, ya = augment_dataset(
            x,
            y,
            settings["n_augmented"],
            AugmentParams(**settings["augment"]),
            seed=settings["seed"],
            batch_size=settings["augment_batch_size"],
        )
        augment_s = time.perf_counter() - t0
        # Originals first, then augmented, as the chapter (and the pipeline) concatenate them.
        x, y = np.concatenate([x, xa]), np.concatenate([y, ya])
    return x, y, ds.x_test, ds.y_test, augment_s


def _fit_ours(name: str, x, y, settings: dict[str, Any]):
    from fmnist.bench.settings import FIT_FIELDS
    from fmnist.stages.models import build_model
    from fmnist.stages.train import FitParams, build_for_training, train_model

    params = FitParams(**{k: settings[k] for k in FIT_FIELDS})
    model = build_for_training(lambda: build_model(name), params, settings["seed"])
    epoch_s: list[float] = []
    result = train_model(
        model,
        x,
        y,
        params,
        on_epoch=lambda _, metrics: epoch_s.append(metrics["epoch_seconds"]),
        seed=settings["seed"],
    )
    return model, epoch_s, result.train_samples, result.val_samples


def _fit_plain(name: str, x, y, settings: dict[str, Any]):
    import keras

    from fmnist.bench.settings import BASELINE
    from fmnist.stages.models import build_model

    keras.utils.set_random_seed(settings["seed"])
    model = build_model(name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=BASELINE["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    epoch_s: list[float] = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_s.append(time.perf_counter() - self.t0)

    model.fit(
        x,
        y,
        epochs=settings["epochs"],
        batch_size=BASELINE["batch_size"],
        validation_split=BASELINE["validation_split"],
        callbacks=[EpochClock()],
        verbose=0,
    )
    n_val = int(len(x) * BASELINE["validation_split"])
    return model, epoch_s, len(x) - n_val, n_val


def measure(
    name: str, runner: str, settings: dict[str, Any], data_dir: Path, cache_dir: Path
) -> dict[str, Any]:
    """Load, train, test one model with one code path; return what was measured."""
    t_process = time.perf_counter()
    from fmnist.stages.backend import apply_backend, resolve_backend

    apply_backend(resolve_backend("tensorflow"))  # KERAS_BACKEND if set, before keras loads
    import keras

    from fmnist.bench.flops import forward_flops, training_flops
    from fmnist.stages.models import get_spec
    from fmnist.stages.train import backend_and_device

    spec = get_spec(name)
    x, y, x_test, y_test, augment_s = load_data(settings, data_dir, cache_dir, spec.augmented)
    fit = {"ours": _fit_ours, "plain": _fit_plain}[runner]
    cpu0, t0 = time.process_time(), time.perf_counter()
    model, epoch_s, n_train, n_val = fit(name, x, y, settings)
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    test_loss, test_acc = model.evaluate(
        x_test, y_test, batch_size=settings["eval_batch_size"], verbose=0
    )
    first = epoch_s[0]
    steady = float(np.median(epoch_s[1:])) if len(epoch_s) > 1 else first
    epoch_flops = training_flops(model, n_train, n_val)
    env = backend_and_device()
    return {
        "model": name,
        "runner": runner,
        "backend": env["backend"],
        "device": env["device"],
        "cpu_count": os.cpu_count(),
        "keras_version": keras.__version__,
        "precision": settings["precision"] if runner == "ours" else "float32",
        "batch_size": settings["batch_size"] if runner == "ours" else 32,
        "params": int(model.count_params()),
        "train_samples": n_train,
        "val_samples": n_val,
        "epochs": len(epoch_s),
        "epoch_seconds": epoch_s,
        "first_epoch_s": first,
        "steady_epoch_s": steady,
        # What the first epoch costs beyond a steady one: tracing, compilation, warm-up.
        "compile_s": first - steady,
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "samples_per_s": n_train * len(epoch_s) / fit_s,
        "steady_samples_per_s": n_train / steady,
        "samples_per_cpu_s": n_train * len(epoch_s) / fit_cpu_s,
        "forward_flops_per_sample": sum(forward_flops(model).values()),
        "epoch_tflop": epoch_flops / 1e12,
        "steady_tflops": epoch_flops / steady / 1e12,
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "augment_s": augment_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "process_s": time.perf_counter() - t_process,
        "imported_forbidden": [m for m in FORBIDDEN if m in sys.modules],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure and write the result as JSON to --out."""
    parser = argparse.ArgumentParser(prog="python -m fmnist.bench.worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--runner", choices=("ours", "plain"), required=True)
    parser.add_argument("--settings", required=True, help="JSON of bench.settings.resolve()")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = measure(args.model, args.runner, json.loads(args.settings), args.data, args.cache)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
