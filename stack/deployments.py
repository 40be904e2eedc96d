"""Deploy prefect.yaml (the deployments' one declaration) to a Prefect server: the checked way.

    python -m fmnist.stack.deployments apply [--profile quick] [--local] [key=value ...]

makes sure the work pools prefect.yaml names exist, locked down (stack/pools.py, the one place
that creates pools), and the automation that marks flow runs Crashed when their heartbeats
stop (stack/automations.py); then runs `prefect deploy --all` on prefect.yaml with the
profile's schedule, against PREFECT_API_URL (PREFECT_API_AUTH_STRING and
PREFECT_API_SSL_CERT_FILE when the server asks for them). By default flow runs clone the
code from git at the commit deployed, and a tree with uncommitted changes or a commit the
repository lacks is refused (stack/source.py); --local (FMNIST_DEPLOY_SOURCE=local) deploys
this checkout as it is on disk instead, for workers on this machine only, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from fmnist.conf import DEFAULT_PROFILE, Config, ConfigError, load_config
from fmnist.stack import REPO_ROOT, pools
from fmnist.stack.automations import ensure_zombie_automation
from fmnist.stack.source import (
    REPOSITORY_ENV,
    SETTINGS_ENV,
    SOURCE_ENV,
    SourceError,
    checked_source,
    settings_of,
)
from fmnist.stages.models import REGISTRY

PREFECT_FILE = "prefect.yaml"
PIPELINE_DEPLOYMENT = "pipeline"
SCORE_DEPLOYMENT = "score-images"
DEPLOY_TIMEOUT_S = 600.0
LOCAL_TAG = "local-source"


class DeployError(RuntimeError):
    """`prefect deploy` failed; the message holds its output."""


def declaration(checkout: Path = REPO_ROOT) -> dict[str, Any]:
    """prefect.yaml of a checkout, parsed."""
    return yaml.safe_load((checkout / PREFECT_FILE).read_text())


def _derived(
    declared: dict[str, Any],
    checkout: Path,
    *,
    local: bool,
    pipeline_name: str,
    score: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """prefect.yaml as this call deploys it: the pipeline under another name (tests that
    change its parameters); score-images with a source and its nightly schedule (`score`:
    source, cron, timezone, active) when the profile sets one; local, pull steps that use the
    checkout in place."""
    derived = json.loads(json.dumps(declared))  # a deep copy
    for entry in derived["deployments"]:
        if entry["name"] == PIPELINE_DEPLOYMENT:
            entry["name"] = pipeline_name
        if entry["name"] == SCORE_DEPLOYMENT and score:
            schedule = {k: score[k] for k in ("cron", "timezone", "active")}
            entry["parameters"] = {**entry.get("parameters", {}), "source": score["source"]}
            entry["schedules"] = [schedule]
        if local:
            entry["description"] = f"LOCAL: this machine's checkout {checkout}. " + entry.get(
                "description", ""
            )
            entry["tags"] = [*entry.get("tags", []), LOCAL_TAG]
    if local:
        step = {"prefect.deployments.steps.set_working_directory": {"directory": str(checkout)}}
        derived["pull"] = [step]
    return derived


def score_schedule(cfg: Config) -> dict[str, Any] | None:
    """score-images' source and nightly schedule, None without serving.score_source (a
    scheduled run would have nothing to score)."""
    serving, sched = cfg.serving, cfg.deploy.schedule
    if not serving.score_source:
        return None
    return {
        "source": serving.score_source,
        "cron": serving.score_cron,
        "timezone": sched.timezone,
        "active": sched.active,
    }


def _prefect_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment with its Prefect client settings made explicit (tests set
    them in-process with temporary_settings, which a subprocess would not see)."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    # An empty schedules list clears the schedules applied before (score-images once its
    # source is unset): Prefect 3.9 keeps them on [] unless told otherwise.
    env = dict(os.environ) | extra
    env |= {"PREFECT_CLI_PROMPT": "false", "PREFECT_DEPLOYMENTS_CLEAR_SCHEDULES_ON_EMPTY": "true"}
    if api.url:
        env["PREFECT_API_URL"] = str(api.url)
    if api.auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = api.auth_string.get_secret_value()
    if api.ssl_cert_file:
        env["PREFECT_API_SSL_CERT_FILE"] = str(api.ssl_cert_file)
    return env


def _deploy(prefect_file: Path, checkout: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "deploy", "--all", "--prefect-file", str(prefect_file)],
        cwd=checkout,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise DeployError(
            f"prefect deploy failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def apply(
    cfg: Config,
    checkout: Path = REPO_ROOT,
    *,
    local: bool = False,
    pipeline_name: str = PIPELINE_DEPLOYMENT,
    repository: str | None = None,
) -> dict[str, UUID]:
    """Deploy prefect.yaml's deployments (and their pools); return flow/name -> deployment id.

    local: flow runs use checkout in place (workers on this machine only); else they clone
    `repository` (default: FMNIST_GIT_REPOSITORY, else the checkout's remote) at its HEAD,
    which must be committed and on that repository (SourceError says why not).
    pipeline_name: another name gives a deployment of the pipeline with parameters of its own.
    """
    from prefect.client.orchestration import get_client

    checkout = Path(checkout).resolve()
    declared = declaration(checkout)
    env = {SETTINGS_ENV: json.dumps(settings_of(cfg))}
    if local:
        env[SOURCE_ENV] = "local"
        print(
            f"LOCAL deployment: flow runs use {checkout} as it is on disk (uncommitted changes "
            "included); only workers on this machine can run them. Deploy without --local "
            "for workers elsewhere.",
            file=sys.stderr,
        )
    else:
        source = checked_source(checkout, repository)  # refused here, before anything changes
        env |= {SOURCE_ENV: "git", REPOSITORY_ENV: source.repository}
        print(f"deploying commit {source.commit} of {source.repository}", file=sys.stderr)
    names = {e["name"]: e["entrypoint"] for e in declared["deployments"]}
    _check_train_deployment(cfg, declared)
    with get_client(sync_client=True) as client:  # PREFECT_API_URL/AUTH of this process
        pools.ensure_pools(client, {e["work_pool"]["name"] for e in declared["deployments"]})
    ensure_zombie_automation()  # a flow run whose process died does not stay Running
    derived = _derived(
        declared, checkout, local=local, pipeline_name=pipeline_name, score=score_schedule(cfg)
    )
    with tempfile.TemporaryDirectory(prefix="fmnist-deploy-") as tmp:
        prefect_file = Path(tmp) / PREFECT_FILE
        prefect_file.write_text(yaml.safe_dump(derived, sort_keys=False))
        _deploy(prefect_file, checkout, _prefect_env(env))
    ids = {}
    with get_client(sync_client=True) as client:
        for entry in derived["deployments"]:
            flow_name = _flow_name(names.get(entry["name"]) or names[PIPELINE_DEPLOYMENT])
            full = f"{flow_name}/{entry['name']}"
            ids[full] = client.read_deployment_by_name(full).id
    return ids


def _flow_name(entrypoint: str) -> str:
    from fmnist import flows

    known = {
        flows.PIPELINE_ENTRYPOINT: flows.PIPELINE_FLOW,
        flows.TRAIN_ENTRYPOINT: flows.TRAIN_FLOW,
        flows.CERTIFY_ENTRYPOINT: flows.CERTIFY_FLOW,
        flows.SCORE_ENTRYPOINT: flows.SCORE_FLOW,
    }
    if entrypoint not in known:
        raise ConfigError(f"{PREFECT_FILE}: entrypoint {entrypoint!r} is not in flows/__init__.py")
    return known[entrypoint]


def _check_train_deployment(cfg: Config, declared: dict[str, Any]) -> None:
    """orchestration.train_deployment must name a deployment prefect.yaml declares."""
    declared_names = {f"{_flow_name(e['entrypoint'])}/{e['name']}" for e in declared["deployments"]}
    if cfg.orchestration.train_deployment not in declared_names:
        raise ConfigError(
            f"orchestration.train_deployment={cfg.orchestration.train_deployment!r} is none "
            f"of the deployments {PREFECT_FILE} declares: {sorted(declared_names)}"
        )


def apply_in_subprocess(env: dict[str, str], log_path: Path, python: Path) -> str:
    """Run `python -m fmnist.stack.deployments apply` (stack-up's way), its output appended to
    log_path; what was applied, or StackError with the reason (a refusal says what to do)."""
    from fmnist.stack import StackError

    with open(log_path, "ab") as log:
        start = log.tell()
        result = subprocess.run(
            [str(python), "-m", "fmnist.stack.deployments", "apply"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            timeout=DEPLOY_TIMEOUT_S + 120,
            check=False,
        )
    with open(log_path, "rb") as log:
        log.seek(start)
        lines = log.read().decode(errors="replace").splitlines()
    if result.returncode != 0:
        why = [line for line in lines if line.startswith("deployments: ")] or lines[-5:]
        raise StackError(f"deployments not applied (see {log_path}):\n" + "\n".join(why))
    applied = [line.removeprefix("applied ") for line in lines if line.startswith("applied ")]
    return f"deployments      applied: {', '.join(applied)}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m fmnist.stack.deployments apply [--profile P] [--local] [k=v]`."""
    parser = argparse.ArgumentParser(prog="python -m fmnist.stack.deployments")
    parser.add_argument("command", choices=["apply"])
    parser.add_argument(
        "--profile", default=DEFAULT_PROFILE, help="profile whose deploy: section is used"
    )
    parser.add_argument(
        "--local",
        action="store_true",
        default=os.environ.get(SOURCE_ENV) == "local",
        help="flow runs use this checkout in place (one machine); default: git, at HEAD",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.profile, args.overrides, known_models=REGISTRY)
        applied = apply(cfg, local=args.local)
    except (ConfigError, SourceError, DeployError) as exc:
        print(f"deployments: {exc}", file=sys.stderr)
        return 2
    for name, deployment_id in applied.items():
        print(f"applied {name} ({deployment_id}){' LOCAL' if args.local else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
