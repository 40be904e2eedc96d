"""The `fmnist` command line.

    fmnist run [--profile quick] [key=value ...]     run the pipeline flow
    fmnist certify --seeds N [--profile quick] [key=value ...]
                                                     each model with N seeds, against the chapter
    fmnist config [--profile quick] [key=value ...]  print the resolved configuration
    fmnist profiles                                  list the profiles in conf/
    fmnist predict IMAGE...                          classify images with the champion model
    fmnist lineage [MODEL_URI]                       where a registered model came from
    fmnist serve [--model URI] [--port P]            serve the champion over HTTP (flows/serve.py)
    fmnist spool status|upload                       writes kept while MLflow was away

Configuration errors exit with status 2 before Prefect or MLflow are even imported, so a
typo never opens an MLflow run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fmnist.conf import (
    DEFAULT_PROFILE,
    Config,
    ConfigError,
    available_profiles,
    load_config,
    parse_overrides,
)
from fmnist.conf.settings import apply_process_defaults
from fmnist.stages.backend import BackendError, apply_backend, resolve_backend
from fmnist.stages.models import REGISTRY

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmnist", description="Fashion-MNIST CNN chapter as a Prefect + MLflow pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the pipeline flow"),
        ("config", "print the resolved configuration and exit"),
        ("certify", "train each model with N seeds; certify its accuracy against the chapter"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--profile",
            default=DEFAULT_PROFILE,
            help=f"one of {', '.join(available_profiles())}, or a YAML file "
            f"(default: {DEFAULT_PROFILE})",
        )
        p.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="override any setting, e.g. train.epochs=3 'train.models=[vgg]'",
        )
    for name in ("run", "certify"):
        sub.choices[name].add_argument(
            "--fresh",
            action="store_true",
            help="start over, even if a killed run with the same config and data could resume",
        )
    sub.choices["certify"].add_argument(
        "--seeds", type=int, default=3, help="seeds per model, at least 2 (default: 3)"
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
    lineage = sub.add_parser(
        "lineage", help="trace a registered model back to its runs, flow run and commit"
    )
    lineage.add_argument(
        "model",
        nargs="?",
        default=None,
        help="models:/NAME@ALIAS or models:/NAME/VERSION "
        "(default: models:/<tracking.registered_model>@champion)",
    )
    lineage.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else the quick profile's)",
    )
    from fmnist.flows import serve

    serve.add_arguments(sub.add_parser("serve", help="serve the champion on 127.0.0.1 over HTTP"))
    spool = sub.add_parser("spool", help="writes kept while the tracking server was away")
    spool.add_argument("action", choices=["status", "upload"])
    spool.add_argument(
        "--spool", default=None, help="the spool folder (default: the quick profile's)"
    )
    spool.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow server (default: MLFLOW_TRACKING_URI, else the quick profile's)",
    )
    return parser


def _prepare(cfg: Config, overrides: Sequence[str]) -> list[str] | None:
    """The process set up for a flow; the overrides with the Keras backend in force (None:
    the backend cannot be used, said on stderr)."""
    apply_process_defaults()  # before anything imports keras or prefect
    # Keras reads its backend once, at first import: set it before anything imports keras,
    # and hand the one in force on to the flow (and its workers) in the config.
    explicit = "keras_backend" in parse_overrides(overrides)
    try:
        backend = apply_backend(resolve_backend(cfg.keras_backend, explicit=explicit))
    except BackendError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return None
    return [*overrides, f"keras_backend={backend}"]


def _run(cfg: Config, profile: str, overrides: Sequence[str], fresh: bool = False) -> int:
    overrides = _prepare(cfg, overrides)
    if overrides is None:
        return EXIT_CONFIG
    from fmnist.flows.local_api import prefect_api
    from fmnist.flows.pipeline import fashion_mnist_pipeline

    with prefect_api():  # PREFECT_API_URL's server, or a local one that dies with us
        state = fashion_mnist_pipeline(
            profile=profile, overrides=parse_overrides(overrides), fresh=fresh, return_state=True
        )
    if not state.is_completed():
        print(f"\npipeline {state.name.lower()}: {state.message}", file=sys.stderr)
        return 1
    summary: dict[str, float] = state.result()
    from fmnist.stages.models import get_spec

    print(f"\n{'model':<15} {'test acc':>9} {'chapter':>8} {'diff':>8}")
    for name, acc in summary.items():
        chapter = get_spec(name).chapter_test_accuracy
        print(f"{name:<15} {acc:>9.4f} {chapter:>8.4f} {acc - chapter:>+8.4f}")
    return 0


def _certify(cfg: Config, profile: str, overrides: Sequence[str], seeds: int, fresh: bool) -> int:
    """Run the certify flow; print the certificate (exit 1 if a training run failed)."""
    overrides = _prepare(cfg, overrides)
    if overrides is None:
        return EXIT_CONFIG
    from fmnist.flows.certify import certify
    from fmnist.flows.local_api import prefect_api

    with prefect_api():  # PREFECT_API_URL's server, or a local one that dies with us
        state = certify(
            profile=profile,
            seeds=seeds,
            overrides=parse_overrides(overrides),
            fresh=fresh,
            return_state=True,
        )
    if not state.is_completed():
        print(f"\ncertify {state.name.lower()}: {state.message}", file=sys.stderr)
        return 1
    from fmnist.stages.certificate import certificate_text

    print("\n" + certificate_text(state.result()), end="")
    return 0


def _predict(images: Sequence[str], model_uri: str | None, tracking_uri: str | None) -> int:
    """Print class and probability per image; unreadable files are reported and skipped."""
    _process_defaults()
    import numpy as np

    from fmnist.stages.images import ImageError, read_image
    from fmnist.stages.load import CLASS_NAMES

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
        from fmnist.tracking.registry import Registry

        uri, default_model = _registry(tracking_uri)
        model_uri = model_uri or default_model
        try:
            model = Registry(uri).load_keras_model(model_uri)
        except Exception as exc:  # no registry, no alias, unreachable server: say which
            print(f"fmnist: cannot load {model_uri} from {uri}: {exc}", file=sys.stderr)
            return 1
        probs = np.asarray(model.predict(np.stack(batch), verbose=0))
        for path, p in zip(names, probs, strict=True):
            k = int(np.argmax(p))
            print(f"{path}: {CLASS_NAMES[k]} ({p[k]:.3f})")
    return 1 if failed else 0


def _process_defaults() -> None:
    """The environment a command that loads models needs, before keras is imported: the
    process defaults and the default profile's Keras backend (KERAS_BACKEND wins)."""
    apply_process_defaults()
    apply_backend(resolve_backend(load_config(DEFAULT_PROFILE).keras_backend))


def _registry(tracking_uri: str | None) -> tuple[str, str]:
    """The store to read (argument, MLFLOW_TRACKING_URI, else the default profile's) and the
    champion's URI there; the profile's bounds on calls to a server are applied."""
    from fmnist.tracking import RequestLimits, resolve_tracking_uri

    # The default profile says where runs go and under which name the champion is kept.
    tracking = load_config(DEFAULT_PROFILE).tracking
    uri = tracking_uri or resolve_tracking_uri(tracking.tracking_uri)
    RequestLimits.of(tracking).apply()  # a dead server fails within a bound, named
    return uri, f"models:/{tracking.registered_model}@champion"


def _lineage(model_uri: str | None, tracking_uri: str | None) -> int:
    """Print the chain from a registered model back to its runs, flow run and commit."""
    from fmnist.tasks.keys import TEST_ACCURACY
    from fmnist.tracking import Tracker
    from fmnist.tracking.provenance import lineage

    uri, default_model = _registry(tracking_uri)
    model_uri = model_uri or default_model
    try:
        rows = lineage(Tracker(uri, "", ""), model_uri, TEST_ACCURACY)
    except Exception as exc:  # no such model, alias or run; unreachable server: say which
        print(f"fmnist: cannot trace {model_uri} in {uri}: {exc}", file=sys.stderr)
        return 1
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _spool(action: str, folder: str | None, tracking_uri: str | None) -> int:
    """List the runs with writes waiting, or upload them (exit 1 if some still wait)."""
    _process_defaults()  # an upload may load a spooled model
    from fmnist.tracking.spool import Spool
    from fmnist.tracking.writes import Writer

    uri, _ = _registry(tracking_uri)
    folder = folder or load_config(DEFAULT_PROFILE).tracking.spool_dir
    spool = Spool(folder)
    runs = spool.runs()
    if not runs:
        print(f"nothing waiting in {folder}")
        return 0
    writer = Writer(uri, folder)
    left = 0
    for run_id in runs:
        waiting = spool.pending(run_id)
        if action == "upload":
            try:
                writer.flush(run_id, force=True)
            except Exception as exc:  # refused (not unreachable): say which and go on
                print(f"fmnist: run {run_id}: {type(exc).__name__}: {exc}", file=sys.stderr)
            now = spool.pending(run_id)
            print(f"run {run_id}: {waiting - now} of {waiting} writes uploaded to {uri}")
            left += bool(now)
        else:
            print(f"run {run_id}: {waiting} writes waiting")
    return 1 if action == "upload" and left else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fmnist` command."""
    args = _parser().parse_args(argv)
    if args.command == "profiles":
        print("\n".join(available_profiles()))
        return 0
    if args.command == "predict":
        return _predict(args.images, args.model, args.tracking_uri)
    if args.command == "lineage":
        return _lineage(args.model, args.tracking_uri)
    if args.command == "spool":
        return _spool(args.action, args.spool, args.tracking_uri)
    if args.command == "serve":
        from fmnist.flows import serve

        return serve.run(args)
    try:
        cfg = load_config(args.profile, list(args.overrides), known_models=REGISTRY)
    except ConfigError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "certify":
        from fmnist.stages.significance import MIN_SEEDS

        if args.seeds < MIN_SEEDS:
            print(f"fmnist: --seeds {args.seeds}: at least {MIN_SEEDS}", file=sys.stderr)
            return EXIT_CONFIG
        return _certify(cfg, args.profile, args.overrides, args.seeds, args.fresh)
    if args.command == "config":
        import yaml

        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
        return 0
    return _run(cfg, args.profile, args.overrides, args.fresh)


if __name__ == "__main__":
    sys.exit(main())
