"""The certify flow: each of the chapter's models trained with N seeds, and a certificate of
its test accuracy over the seeds against the chapter's figure (tasks/certify.py).

One MLflow parent run `certificate-<profile>`, one child run per model and seed (named by
its run key, model-seedN; tagged with the model and the seed), trained inline one after the
other, or with orchestration.mode=deployments as train-model flow runs on the training pool,
in parallel. The seeds are seed, seed + 1, ...: they change what training draws (initial
weights, batch order, dropout); the data (subsets, augmented images) are the base seed's, so
every run is tested on the very same images.

Resume is the pipeline's (tasks/resume.py): a certificate that was killed or failed goes on
in the same parent with its unfinished (model, seed) runs. A certificate registers nothing:
it measures a configuration, it does not release a model; the pipeline's gate does that.
"""

from __future__ import annotations

import datetime as dt
import platform
from typing import Any, Literal

from prefect import flow, get_run_logger

from fmnist.conf import DEFAULT_PROFILE, Config, load_config
from fmnist.flows import CERTIFY_ENTRYPOINT, CERTIFY_FLOW
from fmnist.flows.pipeline import TrainingRunsFailed, augment_if_needed, log_run_inputs
from fmnist.flows.train_model import train_and_evaluate
from fmnist.stages.augment import Augmented
from fmnist.stages.backend import apply_backend, resolve_backend
from fmnist.stages.download import verify_cache
from fmnist.stages.evaluate import digest_of_test_set
from fmnist.stages.load import Dataset
from fmnist.stages.models import REGISTRY
from fmnist.stages.significance import MIN_SEEDS
from fmnist.stages.store import StoredArrays, pack_dataset, publish_dataset
from fmnist.stages.train import backend_and_device
from fmnist.tasks import keys, run_cached
from fmnist.tasks.augment import read_augmented
from fmnist.tasks.certify import certificate, run_key
from fmnist.tasks.download import download
from fmnist.tasks.load import load
from fmnist.tasks.resume import PipelineRun, pipeline_run
from fmnist.tracking import tracker_for
from fmnist.tracking.provenance import provenance_tags
from fmnist.tracking.runs import stopped_by

Jobs = dict[str, tuple[str, int]]  # run key -> (model, seed)


@flow(name=CERTIFY_FLOW, flow_run_name="certificate-{profile}", log_prints=True)
def certify(
    profile: str = DEFAULT_PROFILE,
    seeds: int = 3,
    train_mode: Literal["inline", "deployments"] | None = None,
    overrides: dict[str, Any] | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train every configured model with `seeds` seeds; return the certificate (JSON-able).

    Args:
        profile: conf/ profile (book: the chapter exactly; smoke: seconds), or a YAML file.
        seeds: Seeds per model (at least 2): seed, seed + 1, ... of the config's seed.
        train_mode: inline (one run after another, here) or deployments (train-model flow
            runs on the training work pool, in parallel); default: the profile's.
        overrides: Any other setting, as dotted keys, e.g. {"train.epochs": 3}.
        fresh: Start over even if an unfinished certificate with the same config, seeds and
            data could go on (that one is then abandoned for good).
    """
    if seeds < MIN_SEEDS:
        raise ValueError(f"seeds={seeds}: an interval over seeds needs at least {MIN_SEEDS}")
    explicit = {"orchestration.mode": train_mode} if train_mode else {}
    cfg = load_config(profile, {**(overrides or {}), **explicit}, known_models=REGISTRY)
    apply_backend(resolve_backend(cfg.keras_backend))  # before anything here imports keras
    seed_list = [cfg.seed + i for i in range(seeds)]
    logger = get_run_logger()
    logger.info(
        "certificate of profile %s: %s x seeds %s", cfg.profile, cfg.train.models, seed_list
    )

    files = run_cached(download, cfg.data, still_valid=verify_cache)  # pinned digests
    dataset = load(files, cfg.data, cfg.seed)  # the base seed's data, for every seed
    tracker = tracker_for(cfg.tracking)
    # The seeds are part of what is computed: a certificate resumes only one with the same.
    config = {**cfg.model_dump(), "certificate_seeds": seed_list}
    tags = {
        **provenance_tags(CERTIFY_ENTRYPOINT, config, dataset.digest),
        keys.PROFILE: cfg.profile,
        keys.FLOW: CERTIFY_FLOW,
        keys.CERTIFICATE_SEEDS: ",".join(map(str, seed_list)),
    }
    with pipeline_run(
        tracker,
        f"certificate-{cfg.profile}",
        tags,
        cfg.train.checkpoint_dir,
        flow=CERTIFY_FLOW,
        fresh=fresh,
    ) as run:
        logger.info("MLflow parent run %s in %s", run.id, tracker.tracking_uri)
        log_run_inputs(cfg, dataset, tracker, run.id)
        ref = augment_if_needed(cfg, dataset, tracker, run.id)
        jobs = {run_key(m, s): (m, s) for s in seed_list for m in cfg.train.models}
        if cfg.orchestration.mode == "deployments":
            failures = _train_on_workers(cfg, jobs, dataset, ref, run)
        else:
            failures = _train_inline(cfg, jobs, dataset, ref, run)
        runs = tracker.child_runs(run.id, name_tag=keys.RUN_KEY)  # read back once
        record = certificate(
            tracker, run.id, runs, cfg.train.models, seed_list, context(cfg, dataset, run.id)
        )
        if failures:  # the certificate has what finished; the flow says what did not
            raise TrainingRunsFailed(
                f"{len(failures)} of {len(jobs)} training runs failed: "
                + "; ".join(f"{k}: {why}" for k, why in failures.items())
            )
    return record


def context(cfg: Config, ds: Dataset, parent: str) -> dict[str, Any]:
    """What a certificate is of: profile, models, data, machine and when."""
    env = backend_and_device()
    return {
        "profile": cfg.profile,
        "parent_run_id": parent,
        "models": list(cfg.train.models),
        "epochs": cfg.train.epochs,
        "train_images": len(ds.y_train),
        "test_images": len(ds.y_test),
        "dataset_digest": ds.digest,
        "test_set_digest": digest_of_test_set(ds.x_test, ds.y_test),
        "keras_backend": env["backend"],
        "device": env["device"],
        "machine": f"{platform.machine()}, {env['cpu_count']} CPUs",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _seeded(cfg: Config, seed: int) -> Config:
    return cfg.model_copy(update={"seed": seed})


def _train_inline(
    cfg: Config, jobs: Jobs, ds: Dataset, ref: StoredArrays | None, run: PipelineRun
) -> dict[str, str]:
    logger = get_run_logger()
    augmented = Augmented(*read_augmented(ref), ref.sha256) if ref else None
    failures: dict[str, str] = {}
    for key, (model, seed) in jobs.items():
        try:
            train_and_evaluate(_seeded(cfg, seed), model, ds, augmented, run, key)
        except Exception as exc:
            if stopped_by(exc) is not None:  # a cleanup failed while a SIGTERM unwound it
                raise
            # One run failing must not throw away the others: its run says why; go on.
            failures[key] = f"{type(exc).__name__}: {exc}"
            logger.error("%s failed: %s", key, failures[key])
    return failures


def _train_on_workers(
    cfg: Config, jobs: Jobs, ds: Dataset, ref: StoredArrays | None, run: PipelineRun
) -> dict[str, str]:
    from fmnist.flows.dispatch import run_all

    augmented = Augmented(*read_augmented(ref), ref.sha256) if ref else None
    dataset = publish_dataset(cfg.data.store_uri, **pack_dataset(ds, augmented))
    requests = {}
    for key, (model, seed) in jobs.items():
        config = _seeded(cfg, seed).model_dump()
        config["tracking"]["tracking_uri"] = run.tracker.tracking_uri  # where this run logs
        requests[key] = {
            "model_name": model,
            "dataset_uri": dataset.uri,
            "dataset_sha256": dataset.sha256,
            "parent_run_id": run.id,
            "config": config,
            "resumed": run.resumed,
            "run_key": key,
        }
    failures = run_all(
        cfg.orchestration.train_deployment,
        requests,
        poll_interval=cfg.orchestration.poll_interval_s,
        timeout=cfg.orchestration.timeout_s,
    )
    logged = run.tracker.child_runs(run.id, name_tag=keys.RUN_KEY)
    for key in jobs:  # completed is not enough: the run must have been scored
        child = logged.get(key)
        if key not in failures and (child is None or keys.TEST_ACCURACY not in child.data.metrics):
            failures[key] = f"the training run completed but logged no {keys.TEST_ACCURACY}"
    return failures
