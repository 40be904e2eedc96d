"""Provenance: where a run came from (code, flow run, configuration, data), as MLflow tags.

Every run and model version carries these tags, so a champion leads back to the commit and the
Prefect flow run that produced it (`fmnist lineage models:/fashion-mnist-cnn@champion`).
MLflow's own `mlflow.source.*` tags make the runs list's Source column say where a run came
from.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmnist.tracking.keys import PARENT

REPO_ROOT = Path(__file__).resolve().parents[1]

# The keys, one name each, shared by runs and model versions.
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_DIRTY = "git.dirty"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
FLOW_RUN_ID = "prefect.flow_run_id"
FLOW_RUN_NAME = "prefect.flow_run_name"
FLOW_RUN_URL = "prefect.flow_run_url"
DEPLOYMENT = "prefect.deployment"
CONFIG_DIGEST = "config_digest"
DATASET_DIGEST = "dataset_digest"
USER = "mlflow.user"  # the OS user of the process (MLflow's own tag: the UI's User column)
LINEAGE_KEYS = (
    GIT_COMMIT,
    GIT_DIRTY,
    GIT_BRANCH,
    FLOW_RUN_ID,
    FLOW_RUN_NAME,
    FLOW_RUN_URL,
    DEPLOYMENT,
    CONFIG_DIGEST,
    DATASET_DIGEST,
)


def _git(*args: str, root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(root: Path = REPO_ROOT) -> dict[str, str]:
    """The commit checked out at root, its branch and whether the tree has local changes;
    {} outside a git checkout (an installed wheel, an image without .git)."""
    commit = _git("rev-parse", "HEAD", root=root)
    if not commit:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no", root=root)
    state = {GIT_COMMIT: commit, GIT_DIRTY: "unknown" if status is None else str(bool(status))}
    branch = _git("rev-parse", "--abbrev-ref", "HEAD", root=root)
    if branch and branch != "HEAD":
        state[GIT_BRANCH] = branch
    return state


def os_user() -> str | None:
    """The operating-system user this process runs as (None when it has no name)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of the resolved configuration, independent of key order.

    The tracking URI is left out: where results are sent is not what is computed (a worker
    may reach the same server by another address).
    """
    config = dict(config)
    if isinstance(config.get("tracking"), Mapping):
        config["tracking"] = {k: v for k, v in config["tracking"].items() if k != "tracking_uri"}
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def prefect_flow_run() -> dict[str, str]:
    """The Prefect flow run this code runs in (id, name, dashboard URL, deployment), if any."""
    from prefect.runtime import deployment, flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return {}
    info = {FLOW_RUN_ID: str(run_id), FLOW_RUN_NAME: str(flow_run.get_name() or "")}
    url = flow_run.get_flow_run_ui_url()
    if url and not url.startswith("None/"):  # the ephemeral API has no dashboard to link to
        info[FLOW_RUN_URL] = url
    if name := deployment.get_name():
        info[DEPLOYMENT] = f"{flow_run.get_flow_name()}/{name}"
    return info


def provenance_tags(
    entrypoint: str, config: Mapping[str, Any], dataset_digest: str
) -> dict[str, str]:
    """All provenance tags for a run made by `entrypoint` (e.g. flows/pipeline.py:flow)."""
    flow = prefect_flow_run()
    return {
        SOURCE_NAME: entrypoint,
        # JOB when a deployment (a scheduled or dashboard run) made it, LOCAL from a shell.
        SOURCE_TYPE: "JOB" if DEPLOYMENT in flow else "LOCAL",
        **git_state(),
        **flow,
        CONFIG_DIGEST: config_digest(config),
        DATASET_DIGEST: dataset_digest,
        **({USER: user} if (user := os_user()) else {}),
    }


def lineage(tracker: Any, model_uri: str, score: str) -> list[tuple[str, str]]:
    """From a registered model back to its run (with its metric `score`), the pipeline's
    parent run, the Prefect flow run and the commit, as (label, value) rows in that order."""
    version = tracker.registry.model_version(model_uri)
    rows = [
        ("model", f"{version.name} version {version.version}"),
        ("aliases", ", ".join(getattr(version, "aliases", None) or []) or "-"),
        ("registered from", str(version.source)),
    ]
    tags = dict(version.tags or {})
    run = tracker.get_run(version.run_id) if version.run_id else None
    if run is not None:
        info, data = run.info, run.data
        value = data.metrics.get(score)
        rows += [
            ("model run", f"{info.run_id} ({info.run_name}, {info.status})"),
            (score.replace("_", " "), f"{value:.4f}" if value is not None else "-"),
        ]
        parent_id = data.tags.get(PARENT)
        if parent_id:
            parent = tracker.get_run(parent_id)
            rows.append(
                ("pipeline run", f"{parent_id} ({parent.info.run_name}, {parent.info.status})")
            )
            tags = {**parent.data.tags, **data.tags, **tags}
        else:
            tags = {**data.tags, **tags}
    labels = {
        GIT_COMMIT: "git commit",
        GIT_DIRTY: "local changes",
        GIT_BRANCH: "git branch",
        FLOW_RUN_ID: "prefect flow run",
        FLOW_RUN_NAME: "flow run name",
        FLOW_RUN_URL: "flow run url",
        DEPLOYMENT: "deployment",
        CONFIG_DIGEST: "config digest",
        DATASET_DIGEST: "dataset digest",
    }
    rows += [(labels[key], tags.get(key, "-")) for key in LINEAGE_KEYS]
    return rows
