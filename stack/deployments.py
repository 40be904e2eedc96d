"""Deployments declared in code, applied to a Prefect server (PREFECT_API_URL, with
PREFECT_API_AUTH_STRING when the server asks for one).

    python -m fmnist.stack.deployments apply [--profile quick]

makes sure the `cpu` and `gpu` process work pools exist, locked down (stack/pools.py, the one
place that creates pools), and creates (or updates) two deployments:
- `fashion-mnist-pipeline/pipeline` on the pipeline pool, with the schedule from the
  profile's `deploy.schedule` (nightly by default), training through deployments;
- `train-model/train-model` on the training pool: one flow run, one process, per model;
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
from fmnist.flows import PIPELINE_ENTRYPOINT, TRAIN_ENTRYPOINT
from fmnist.stack import pools
from fmnist.stack.automations import ensure_zombie_automation
from fmnist.stages.models import REGISTRY

ROOT = Path(__file__).resolve().parents[1]  # the repository: the flows' source
PIPELINE_DEPLOYMENT = "pipeline"


def apply(
    cfg: Config, source: Path = ROOT, *, pipeline_name: str = PIPELINE_DEPLOYMENT
) -> dict[str, UUID]:
    """Create or update both deployments (and their pools); return name -> deployment id.

    pipeline_name: another name gives a deployment of the pipeline with parameters of its own
    (tests that change them do not disturb each other).
    """
    from prefect import Flow
    from prefect.client.orchestration import get_client

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
    return {
        f"{pipeline.name}/{pipeline_name}": pipeline_id,
        cfg.orchestration.train_deployment: train_id,
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
