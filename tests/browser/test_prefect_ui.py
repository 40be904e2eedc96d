"""The Prefect dashboard of the service stack: Deployments -> pipeline -> Run -> Quick run, the
flow run to Completed, and what it published under Artifacts.

Real PostgreSQL, Prefect server, MLflow server and cpu/gpu workers (tests/service_fixtures.py),
all behind their authentication: the browser logs in to the dashboard as a user does (the auth
string, which the dashboard keeps in its local storage). The pipeline is deployed under a name
of this module's own (`pipeline-browser`), with the smoke profile and throwaway folders as its
defaults, so a Quick run (the deployment's defaults, as a user gets them with one click) takes
about a minute, and changing those defaults disturbs no other test's deployment.
"""

from __future__ import annotations

import base64
import contextvars
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.service]

# Two of the four, one of them augmented: every stage runs, at half the service tests' cost
# (tests/service trains all four through the same deployments).
MODELS = ["pool_dropout", "vgg_augmented"]
DEPLOYMENT = "pipeline-browser"
PIPELINE = f"fashion-mnist-pipeline/{DEPLOYMENT}"
EXPERIMENT = "browser-e2e"
# A smoke run: about 6 min here, its four trainings queued on the gpu pool's limit of 1.
RUN_TIMEOUT_S = 900.0

T = TypeVar("T")


@dataclass
class Deployed:
    """The pipeline deployment and its default parameters (what a Quick run gets)."""

    deployment_id: UUID
    parameters: dict[str, Any]


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a thread of its own, with this thread's context (settings).

    While a test's browser runs, Playwright's sync API leaves its event loop marked as running
    in this thread, and Prefect functions that dispatch on that (Flow.from_source, ...) would
    hand back a coroutine; fixtures may be set up after the browser, so they use this too.
    """
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(context.run, fn, *args, **kwargs).result()


@pytest.fixture
def dashboard(browser_page, service_stack) -> Any:
    """The browser page, logged in to the stack's dashboard (the auth string in its local
    storage, where the dashboard's login form puts it)."""
    token = base64.b64encode(service_stack.prefect_auth.encode()).decode()
    browser_page.context.add_init_script(
        f"window.localStorage.setItem('prefect-password', '{token}');"
    )
    return browser_page


def test_dashboard_asks_for_the_auth_string(browser_page, service_stack):
    from playwright.sync_api import expect

    page = browser_page  # not logged in
    page.goto(f"{service_stack.prefect_url}/deployments")
    expect(page).to_have_url(re.compile("/login"))
    expect(page.get_by_role("link", name=DEPLOYMENT, exact=True)).to_have_count(0)


@pytest.fixture(scope="module")
def deployed(service_stack, service_workers, debian_dir) -> Iterator[Deployed]:
    """Both deployments applied to the session's server, the pipeline (under this module's
    name) with smoke as its default profile; the Prefect client settings point at that
    server while the module runs."""
    data = service_stack.data_dir("browser-data")  # the workers' user writes there
    # A Quick run takes the deployment's defaults: point them at throwaway folders and an
    # experiment of this module's own (the service tests use others).
    overrides = {
        "data.sources": [str(debian_dir)],
        "data.cache_dir": str(data / "fashion-mnist"),
        "data.prepared_dir": str(data / "prepared"),
        "data.store_uri": str(data / "store"),
        "tracking.experiment": EXPERIMENT,
    }
    with service_stack.prefect_settings():
        yield off_loop(_deploy, overrides)


def _deploy(overrides: dict[str, Any]) -> Deployed:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    from fmnist.conf import load_config as resolve_config
    from fmnist.stack.deployments import apply

    # No schedule is ever active in a test stack.
    cfg = resolve_config(
        "smoke",
        overrides={"deploy.scheduled_profile": "smoke", "deploy.schedule.active": False},
    )
    ids = apply(cfg, local=True, pipeline_name=DEPLOYMENT)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(ids[PIPELINE])
        assert deployment.parameters["profile"] == "smoke"
        parameters = {**deployment.parameters, "models": MODELS, "overrides": overrides}
        client.update_deployment(deployment.id, DeploymentUpdate(parameters=parameters))
        # "Ready" on the dashboard: the cpu worker has polled the deployment's queue.
        deadline = time.monotonic() + 120
        while client.read_deployment(deployment.id).status.value != "READY":
            assert time.monotonic() < deadline, "the pipeline deployment never became ready"
            time.sleep(2)
    return Deployed(deployment.id, parameters)


def wait_final(flow_run_id: UUID, timeout: float) -> Any:
    """The flow run once it reached a final state (read through the API every 3 s)."""
    return off_loop(_wait_final, flow_run_id, timeout)


def _wait_final(flow_run_id: UUID, timeout: float) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"flow run {flow_run_id} still {run.state and run.state.name} "
                    f"after {timeout:.0f} s"
                )
            time.sleep(3)


def test_deployments_page_lists_the_pipeline(dashboard, service_stack, deployed):
    from playwright.sync_api import expect

    page = dashboard
    page.goto(f"{service_stack.prefect_url}/deployments")
    # The dashboard found its API (PREFECT_UI_API_URL) and got in: the list comes from it.
    row = page.locator("tr").filter(has=page.get_by_role("link", name=DEPLOYMENT, exact=True))
    expect(row).to_be_visible()
    expect(row).to_contain_text("fashion-mnist-pipeline")  # the flow it deploys
    expect(row).to_contain_text("Ready")
    expect(row).to_contain_text("At 02:00 AM every day")  # the nightly schedule
    train = page.locator("tr").filter(has=page.get_by_role("link", name="train-model", exact=True))
    expect(train).to_be_visible()
    page.screenshot(path=screenshot_path("prefect-deployments.png"))


def test_quick_run_completes_and_publishes_the_comparison(dashboard, service_stack, deployed):
    from playwright.sync_api import expect

    page = dashboard
    page.goto(f"{service_stack.prefect_url}/deployments")
    page.get_by_role("link", name=DEPLOYMENT, exact=True).click()
    expect(page).to_have_url(re.compile(f"/deployments/deployment/{deployed.deployment_id}"))
    clicked = datetime.now(UTC)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Quick run", exact=True).click()
    # The toast that confirms the new run links to it (this UI shows it twice, stacked).
    page.get_by_role("button", name="View run").last.click()
    expect(page).to_have_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
    flow_run_id = UUID(re.search(r"/runs/flow-run/([0-9a-f-]{36})", page.url).group(1))

    run = wait_final(flow_run_id, RUN_TIMEOUT_S)
    assert run.deployment_id == deployed.deployment_id
    assert off_loop(runs_created_since, deployed.deployment_id, clicked) == [flow_run_id]
    assert run.parameters == deployed.parameters  # a Quick run: the deployment's defaults
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    page.reload()
    state = page.locator(".page-heading-flow-run__meta .state-badge")
    expect(state).to_have_text("Completed")
    expect(page.locator(".page-heading-flow-run")).to_contain_text("smoke")  # its run name
    page.wait_for_timeout(1_500)  # the run graph is a canvas: let it draw
    page.screenshot(path=screenshot_path("prefect-flow-run.png"))

    # Artifacts tab: the comparison table and the MLflow links, as cards.
    tabs = page.get_by_role("tablist")
    tabs.get_by_text("Artifacts", exact=True).click()
    cards = page.locator(".artifact-card")
    table_card = cards.filter(has_text="model-comparison")
    expect(table_card).to_be_visible()
    expect(table_card.locator(".artifact-card__subheader")).to_have_text(re.compile("table", re.I))
    markdown_card = cards.filter(has_text="mlflow-run")
    expect(markdown_card).to_be_visible()
    expect(markdown_card.locator(".artifact-card__subheader")).to_have_text(
        re.compile("markdown", re.I)
    )
    tabs.evaluate("tabs => tabs.scrollIntoView({block: 'start'})")  # tabs on top, cards below
    page.screenshot(path=screenshot_path("prefect-artifacts.png"))

    # The Markdown card: links into the MLflow server the run logged to.
    markdown_card.click()
    expect(page).to_have_url(re.compile(r"/artifacts/artifact/"))
    compare = page.locator(f'.markdown-renderer a[href^="{service_stack.mlflow_url}/"]').filter(
        has_text=re.compile("compare", re.I)
    )
    expect(compare).to_have_count(1)
    assert "#/compare-runs?" in compare.get_attribute("href")
    page.go_back()  # to the flow run, which opens on its Logs tab again
    tabs.get_by_text("Artifacts", exact=True).click()
    expect(table_card).to_be_visible()

    # The table itself: one row per model, its test accuracy as MLflow has it.
    table_card.click()
    expect(page).to_have_url(re.compile(r"/artifacts/artifact/"))
    table = page.locator("table").filter(has=page.locator("th", has_text="test_accuracy"))
    expect(table.locator("tbody tr")).to_have_count(len(MODELS))
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    rows = [
        [c.strip() for c in tr.locator("td").all_inner_texts()]
        for tr in table.locator("tbody tr").all()
    ]
    shown = {row[headers.index("model")]: row for row in rows}
    assert sorted(shown) == sorted(MODELS), rows
    tracked = mlflow_test_accuracy(service_stack.mlflow_url)
    for model, row in shown.items():
        cell = row[headers.index("test_accuracy")]
        decimals = len(cell.partition(".")[2])  # the table may round: as far as it shows
        tolerance = 0.5 * 10**-decimals + 1e-12
        assert abs(float(cell) - tracked[model]) <= tolerance, (model, row, tracked[model])
    page.screenshot(path=screenshot_path("prefect-artifact-table.png"))


def runs_created_since(deployment_id: UUID, since: datetime) -> list[UUID]:
    """The deployment's flow runs created since then, the scheduler's own left out."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return [r.id for r in runs if r.created >= since and not r.auto_scheduled]


def mlflow_test_accuracy(tracking_uri: str) -> dict[str, float]:
    """Model -> test_accuracy of the newest pipeline run in EXPERIMENT on the stack's MLflow."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return {
        r.info.run_name: r.data.metrics["test_accuracy"]
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
