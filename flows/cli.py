"""The `fmnist` command line.

    fmnist run [--profile quick] [key=value ...]     run the pipeline flow
    fmnist config [--profile quick] [key=value ...]  print the resolved configuration
    fmnist profiles                                  list the profiles in conf/
    fmnist predict IMAGE...                          classify images with the champion model

Configuration errors exit with status 2 before Prefect or MLflow are even imported, so a
typo never opens an MLflow run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from conf import Config, ConfigError, available_profiles, load_config, parse_overrides
from flows.config import resolve_config
from stages.backend import BackendError, apply_backend, resolve_backend

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmnist", description="Fashion-MNIST CNN chapter as a Prefect + MLflow pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the pipeline flow"),
        ("config", "print the resolved configuration and exit"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--profile",
            default="quick",
            help=f"one of {', '.join(available_profiles())}, or a YAML file (default: quick)",
        )
        p.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="override any setting, e.g. train.epochs=3 'train.models=[vgg]'",
        )
    sub.add_parser("profiles", help="list the profiles")
    predict = sub.add_parser("predict", help="classify 28x28 greyscale images with a model")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="PNG (or other) files")
    predict.add_argument(
        "--model",
        default=None,
        help="model URI (default: models:/<tracking.registered_model>@champion)",
    )
    predict.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else the quick profile's)",
    )
    return parser


def _run(cfg: Config, profile: str, overrides: Sequence[str]) -> int:
    # Keras reads its backend once, at first import: set it before anything imports keras,
    # and hand the one in force on to the flow (and its workers) in the config.
    explicit = "keras_backend" in parse_overrides(overrides)
    try:
        backend = apply_backend(resolve_backend(cfg.keras_backend, explicit=explicit))
    except BackendError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    overrides = [*overrides, f"keras_backend={backend}"]
    # The ephemeral Prefect server's telemetry heartbeat races the flow for its SQLite file
    # ("database is locked" tracebacks in the log); it sends nothing useful offline anyway.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.pipeline import fashion_mnist_pipeline

    state = fashion_mnist_pipeline(
        profile=profile, overrides=parse_overrides(overrides), return_state=True
    )
    if not state.is_completed():
        print(f"\npipeline {state.name.lower()}: {state.message}", file=sys.stderr)
        return 1
    summary: dict[str, float] = state.result()
    from stages.models import get_spec

    print(f"\n{'model':<15} {'test acc':>9} {'chapter':>8} {'diff':>8}")
    for name, acc in summary.items():
        book = get_spec(name).book_test_accuracy
        print(f"{name:<15} {acc:>9.4f} {book:>8.4f} {acc - book:>+8.4f}")
    return 0


def _predict(images: Sequence[str], model_uri: str | None, tracking_uri: str | None) -> int:
    """Print class and probability per image; unreadable files are reported and skipped."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from stages.images import ImageError, read_image
    from stages.load import CLASS_NAMES

    batch, names, failed = [], [], 0
    for path in images:
        try:
            pixels, warning = read_image(Path(path))
        except ImageError as exc:
            print(f"fmnist: {exc}", file=sys.stderr)
            failed += 1
            continue
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        batch.append(pixels)
        names.append(path)
    if batch:
        from tracking import Tracker, resolve_tracking_uri

        # The default profile says where runs go and under which name the champion is kept.
        tracking = load_config("quick").tracking
        uri = tracking_uri or resolve_tracking_uri(tracking.tracking_uri)
        model_uri = model_uri or f"models:/{tracking.registered_model}@champion"
        try:
            model = Tracker(uri, "", "").load_keras_model(model_uri)
        except Exception as exc:  # no registry, no alias, unreachable server: say which
            print(f"fmnist: cannot load {model_uri} from {uri}: {exc}", file=sys.stderr)
            return 1
        probs = np.asarray(model.predict(np.stack(batch), verbose=0))
        for path, p in zip(names, probs, strict=True):
            k = int(np.argmax(p))
            print(f"{path}: {CLASS_NAMES[k]} ({p[k]:.3f})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` command."""
    args = _parser().parse_args(argv)
    if args.command == "profiles":
        print("\n".join(available_profiles()))
        return 0
    if args.command == "predict":
        return _predict(args.images, args.model, args.tracking_uri)
    try:
        cfg = resolve_config(args.profile, overrides=list(args.overrides))
    except ConfigError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "config":
        import yaml

        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
        return 0
    return _run(cfg, args.profile, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
