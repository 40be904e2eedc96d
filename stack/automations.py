"""Prefect automations the stack keeps: flow runs whose process died are marked Crashed.

A flow run's process sends a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (the
workers' environment sets it: stack/services.py). When a run's heartbeats stop and no final
state follows within ZOMBIE_AFTER_S (a power loss, an OOM kill, a SIGKILL of its worker),
this automation moves it to Crashed, so nothing stays Running forever. The pipeline's own
reclaim step then ends the matching MLflow runs or resumes them (tasks/reclaim.py).
"""

from __future__ import annotations

from datetime import timedelta

ZOMBIE_AUTOMATION = "crash-zombie-flow-runs"
HEARTBEAT_S = 30
ZOMBIE_AFTER_S = 4 * HEARTBEAT_S  # a few missed beats, not one late one


def ensure_zombie_automation() -> str:
    """Create the zombie-detection automation on the server unless it exists; return its id."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        return str(Automation.read(name=ZOMBIE_AUTOMATION).id)
    except ValueError:  # not there yet
        pass
    automation = Automation(
        name=ZOMBIE_AUTOMATION,
        description="Marks flow runs Crashed when their heartbeats stop (their process died).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {ZOMBIE_AFTER_S} s: the flow run's process died",
            )
        ],
    ).create()
    return str(automation.id)
