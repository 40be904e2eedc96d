"""Deployments declared in code, applied to a Prefect server (PREFECT_API_URL, with
PREFECT_API_AUTH_STRING when the server asks for one).

    python -m fmnist.stack.deployments apply [--profile quick]

makes sure the `cpu` and `gpu` process work pools exist, locked down (stack/pools.py, the one
place that creates pools), and creates (or updates) four deployments:
- `fashion-mnist-pipeline/pipeline` on the pipeline pool, with the schedule from the
  profile's `deploy.schedule` (nightly by default), training through deployments;
- `train-model/train-model` on the training pool: one flow run, one process, per model;
- `certify/certify` on the pipeline pool, no schedule: every model with N seeds, its
  training runs on the training pool (docs/significance.md);
- `score-images/score-images` on the pipeline pool: a folder or URL of images scored by the
  champion, on `serving.score_cron` when `serving.score_source` is set (docs/serving.md);
and the automation that marks flow runs Crashed when their heartbeats stop
(stack/automations.py).
Workers started with `prefect worker start --pool cpu|gpu` in a checkout (or image) of
this repository pick them up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from uuid import UUID

from prefect.schedules import Cron

from fmnist.conf import DEFAULT_PROFILE, Config, ConfigError, load_config
from fmnist.flows import CERTIFY_ENTRYPOINT, PIPELINE_ENTRYPOINT, SCORE_ENTRYPOINT, TRAIN_ENTRYPOINT
from fmnist.stack import pools
from fmnist.stack.automations import ensure_zombie_automation
from fmnist.stages.models import REGISTRY

ROOT = Path(__file__).resolve().parents[1]  # the repository: the flows' source
PIPELINE_DEPLOYMENT = "pipeline"
CERTIFY_DEPLOYMENT = "certify"
SCORE_DEPLOYMENT = "score-images"


def apply(
    cfg: Config, source: Path = ROOT, *, pipeline_name: str = PIPELINE_DEPLOYMENT
) -> dict[str, UUID]:
    """Create or update the deployments (and their pools); return name -> deployment id.

    pipeline_name: another name gives a deployment of the pipeline with parameters of its own
    (tests that change them do not disturb each other).
    """
    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY, temporary_settings

    with get_client(sync_client=True) as client:  # PREFECT_API_URL/AUTH of this process
        pools.ensure_pools(client, {cfg.deploy.pipeline_pool, cfg.deploy.train_pool})
    ensure_zombie_automation()  # a flow run whose process died does not stay Running
    sched = cfg.deploy.schedule
    pipeline = Flow.from_source(source=str(source), entrypoint=PIPELINE_ENTRYPOINT)
    pipeline_id = pipeline.deploy(
        name=pipeline_name,
        work_pool_name=cfg.deploy.pipeline_pool,
        build=False,
        push=False,
        schedules=[Cron(sched.cron, timezone=sched.timezone, active=sched.active)],
        parameters={"profile": cfg.deploy.scheduled_profile, "train_mode": "deployments"},
        description="The Fashion-MNIST CNN chapter: data stages here, one training run per "
        "model on the training pool, everything tracked in MLflow.",
        tags=["fashion-mnist"],
        print_next_steps=False,
    )
    flow_name, _, deployment_name = cfg.orchestration.train_deployment.partition("/")
    train = Flow.from_source(source=str(source), entrypoint=TRAIN_ENTRYPOINT)
    if train.name != flow_name:
        raise ConfigError(
            f"orchestration.train_deployment={cfg.orchestration.train_deployment!r} names flow "
            f"{flow_name!r}, but the training flow is {train.name!r}"
        )
    train_id = train.deploy(
        name=deployment_name,
        work_pool_name=cfg.deploy.train_pool,
        build=False,
        push=False,
        description="Train and evaluate one model on a prepared dataset (one process each).",
        tags=["fashion-mnist"],
        print_next_steps=False,
    )
    certify = Flow.from_source(source=str(source), entrypoint=CERTIFY_ENTRYPOINT)
    certify_id = certify.deploy(
        name=CERTIFY_DEPLOYMENT,
        work_pool_name=cfg.deploy.pipeline_pool,
        build=False,
        push=False,
        parameters={"profile": cfg.deploy.scheduled_profile, "train_mode": "deployments"},
        description="Every model with N seeds against the chapter: a certificate (JSON, "
        "Markdown, figure) on a parent run of its own; training on the training pool.",
        tags=["fashion-mnist"],
        print_next_steps=False,
    )
    serving = cfg.serving
    score = Flow.from_source(source=str(source), entrypoint=SCORE_ENTRYPOINT)
    # An empty list must clear a schedule applied before (a score_source since unset):
    # Prefect 3.9 keeps the old schedules on [] unless told otherwise.
    with temporary_settings({PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY: True}):
        score_id = score.deploy(
            name=SCORE_DEPLOYMENT,
            work_pool_name=cfg.deploy.pipeline_pool,
            build=False,
            push=False,
            # Nightly only where a source is set: without one a scheduled run has nothing to do.
            schedules=[Cron(serving.score_cron, timezone=sched.timezone, active=sched.active)]
            if serving.score_source
            else [],
            parameters={"profile": cfg.deploy.scheduled_profile}
            | ({"source": serving.score_source} if serving.score_source else {}),
            description="Classify a folder or URL of images with the champion: predictions.csv "
            "on MLflow, a table in Prefect, the model version used.",
            tags=["fashion-mnist"],
            print_next_steps=False,
        )
    return {
        f"{pipeline.name}/{pipeline_name}": pipeline_id,
        cfg.orchestration.train_deployment: train_id,
        f"{certify.name}/{CERTIFY_DEPLOYMENT}": certify_id,
        f"{score.name}/{SCORE_DEPLOYMENT}": score_id,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m fmnist.stack.deployments apply [--profile P] [key=value ...]`."""
    parser = argparse.ArgumentParser(prog="python -m fmnist.stack.deployments")
    parser.add_argument("command", choices=["apply"])
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="profile whose deploy: section is used"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.profile, args.overrides, known_models=REGISTRY)
    except ConfigError as exc:
        print(f"deployments: {exc}", file=sys.stderr)
        return 2
    for name, deployment_id in apply(cfg).items():
        print(f"applied {name} ({deployment_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
