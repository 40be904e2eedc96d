"""Stand-ins for the fast tests (helpers, like tests/helpers.py; no fixtures here): a tracker
that records what a task logs, a tiny Keras model, and fresh SQLite databases (MLflow's
tracking store, the Prefect test harness's) copied from one migrated database instead of
migrated one by one (seconds each).

A stand-in only takes the place of a boundary (MLflow, Prefect's API); the task or function
under test is always the real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Call:
    """One write as a task made it: the operation, the run, its arguments."""

    op: str
    run_id: str
    args: dict[str, Any]


@dataclass
class RecordingWriter:
    """`tracker.log` as a recorder: each write is kept, in order, and nothing is sent."""

    calls: list[Call] = field(default_factory=list)

    def _keep(self, op: str, run_id: str, **args: Any) -> None:
        self.calls.append(Call(op, run_id, args))

    def params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Recorded like Writer.params."""
        self._keep("params", run_id, params=dict(params))

    def metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Recorded like Writer.metrics, with the step it was given (0 when none)."""
        self._keep("metrics", run_id, metrics=dict(metrics), step=step)

    def tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Recorded like Writer.tags."""
        self._keep("tags", run_id, tags=dict(tags))

    def text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Recorded like Writer.text."""
        self._keep("text", run_id, text=text, artifact_file=artifact_file)

    def dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        """Recorded like Writer.dict."""
        self._keep("dict", run_id, data=dict(data), artifact_file=artifact_file)

    def figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Recorded like Writer.figure (the figure object itself is kept)."""
        self._keep("figure", run_id, figure=figure, artifact_file=artifact_file)

    def of(self, op: str) -> list[Call]:
        """The calls of one operation, in order."""
        return [c for c in self.calls if c.op == op]


@dataclass
class RecordingTracker:
    """A Tracker's read and write surface for a task's `.fn`: writes recorded by `log`,
    metric reads answered from what was recorded (or seeded in `earlier`)."""

    log: RecordingWriter = field(default_factory=RecordingWriter)
    earlier: list[Call] = field(default_factory=list)  # writes of an earlier attempt

    def _points(self, run_id: str, key: str) -> list[tuple[int, float]]:
        calls = [*self.earlier, *self.log.of("metrics")]
        return sorted(
            (c.args["step"], c.args["metrics"][key])
            for c in calls
            if c.op == "metrics" and c.run_id == run_id and key in c.args["metrics"]
        )

    def logged_steps(self, run_id: str, key: str) -> list[int]:
        """The steps at which a metric was logged, in order (Tracker.logged_steps)."""
        return [step for step, _ in self._points(run_id, key)]

    def metric_history(self, run_id: str, key: str) -> list[float]:
        """A metric's values in step order (Tracker.metric_history)."""
        return [value for _, value in self._points(run_id, key)]

    def steps(self, run_id: str, key: str) -> list[int]:
        """The steps this attempt logged a metric at (earlier writes left out)."""
        return [
            c.args["step"]
            for c in self.log.of("metrics")
            if c.run_id == run_id and key in c.args["metrics"]
        ]


def tiny_model(name: str = "tiny") -> Any:
    """A small convolutional classifier of 28x28x1 images into 10 classes, with dropout (so
    seeds matter to training): what the chapter's models are, in a few hundred weights."""
    import keras

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name=name,
    )


def _made_once(db: Path, make: Callable[[Path], None]) -> Path:
    """db, made by make(path) unless it is there: under a lock, whole or not at all."""
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=600):
        if not db.is_file():
            partial = db.with_name(f"{db.name}.{os.getpid()}.partial")
            partial.unlink(missing_ok=True)
            make(partial)
            partial.replace(db)
    return db


def migrated_store(folder: Path) -> Path:
    """An MLflow SQLite store with its schema migrated (what a first use does) and nothing
    else, made once per MLflow version in folder and kept there for later sessions."""
    import mlflow

    def make(path: Path) -> None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(f"sqlite:///{path}", str(folder / "default-artifacts"))
        store.engine.dispose()

    return _made_once(folder / f"mlflow-{mlflow.__version__}-migrated.db", make)


def migrated_prefect_db(folder: Path) -> Path:
    """A Prefect server SQLite database with its schema migrated and nothing else, made once
    per Prefect version (by `prefect server database upgrade`, in a process of its own)."""
    import prefect

    def make(path: Path) -> None:
        env = {
            **os.environ,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{path}",
        }
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=env, check=True, capture_output=True, timeout=600,
        )  # fmt: skip

    return _made_once(folder / f"prefect-{prefect.__version__}-migrated.db", make)


@contextmanager
def harness_on_copy_of(template: Path) -> Iterator[None]:
    """prefect_test_harness, entered inside this block, starts its server on a copy of a
    migrated database instead of migrating a new one (most of its start-up time). Where a
    later Prefect names its database otherwise the copy goes unused: slower, no different."""
    import pytest
    from prefect.testing import utilities

    real = utilities.mkdtemp

    def mkdtemp_with_db(*args: object, **kwargs: object) -> str:
        folder = real(*args, **kwargs)
        shutil.copyfile(template, Path(folder) / "prefect-test.db")
        return folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utilities, "mkdtemp", mkdtemp_with_db)
        yield


def copy_store(template: Path, folder: Path, name: str = "mlflow.db") -> str:
    """A fresh store in folder: a copy of the migrated template (its Default experiment
    only, as a new store has); its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / name)
    return f"sqlite:///{folder / name}"
