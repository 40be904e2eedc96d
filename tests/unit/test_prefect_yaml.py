"""prefect.yaml, the deployments' one declaration: its entrypoints are flows/__init__.py's,
its pools the stack's, its pull step clones the repository at the commit the build step
checked; `--local` derives the one-machine variant from it (stack/deployments.py)."""

from __future__ import annotations

from pathlib import Path

from fmnist.flows import PIPELINE_ENTRYPOINT, TRAIN_ENTRYPOINT
from fmnist.stack import POOLS, REPO_ROOT
from fmnist.stack.deployments import LOCAL_TAG, _derived, declaration
from fmnist.stack.source import deployment_source

GIT_CLONE = "prefect.deployments.steps.git_clone"


def test_the_entrypoints_and_pools_are_the_projects():
    declared = declaration()
    by_name = {d["name"]: d for d in declared["deployments"]}
    assert by_name["pipeline"]["entrypoint"] == PIPELINE_ENTRYPOINT
    assert by_name["train-model"]["entrypoint"] == TRAIN_ENTRYPOINT
    assert {d["work_pool"]["name"] for d in declared["deployments"]} <= set(POOLS)
    for entry in declared["deployments"]:
        path = entry["entrypoint"].split(":")[0]
        assert (REPO_ROOT / path).is_file(), path


def test_the_pull_step_clones_the_checked_commit():
    declared = declaration()
    [build] = declared["build"]
    [(step, inputs)] = build.items()
    module, _, function = step.rpartition(".")
    assert f"{module}.{function}" == "fmnist.stack.source.deployment_source"
    assert function == deployment_source.__name__
    [pull] = declared["pull"]
    assert pull == {
        GIT_CLONE: {
            "repository": f"{{{{ {inputs['id']}.repository }}}}",
            "commit_sha": f"{{{{ {inputs['id']}.commit_sha }}}}",
        }
    }
    assert not any("pull" in d for d in declared["deployments"])  # none overrides it


def test_local_is_derived_from_the_declaration_and_says_so(tmp_path: Path):
    declared = declaration()
    local = _derived(declared, tmp_path, local=True, pipeline_name="pipeline-x")
    assert local["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(tmp_path)}}
    ]
    names = [d["name"] for d in local["deployments"]]
    assert names == ["pipeline-x", "train-model", "certify", "score-images"]
    for entry in local["deployments"]:
        assert entry["description"].startswith("LOCAL")
        assert LOCAL_TAG in entry["tags"]
    assert declaration() == declared  # the declaration itself is untouched
    git = _derived(declared, tmp_path, local=False, pipeline_name="pipeline")
    assert git == declared


def test_a_score_source_gives_score_images_its_source_and_nightly_schedule(tmp_path: Path):
    declared = declaration()
    score = {"source": "/srv/in", "cron": "0 4 * * *", "timezone": "UTC", "active": False}
    derived = _derived(declared, tmp_path, local=False, pipeline_name="pipeline", score=score)
    [entry] = [d for d in derived["deployments"] if d["name"] == "score-images"]
    assert entry["parameters"]["source"] == "/srv/in"
    assert entry["schedules"] == [{"cron": "0 4 * * *", "timezone": "UTC", "active": False}]
    [plain] = [d for d in declared["deployments"] if d["name"] == "score-images"]
    assert plain["schedules"] == [] and "source" not in plain["parameters"]  # none declared
