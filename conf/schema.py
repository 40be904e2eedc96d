"""The typed configuration: YAML profiles under conf/ are validated into these objects.

Every model forbids unknown keys, so a typo in a profile or an override is an error that
names the key instead of a setting silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from fmnist.stages.backend import KerasBackend
from fmnist.stages.train import Precision

DEFAULT_PROFILE = "quick"  # what `make run`, `fmnist run` and the schedule use unless told
TrainMode = Literal["inline", "deployments"]  # where models train: here, or on a work pool


class _Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite float (train.learning_rate=inf) is a config
    # error naming the key, for every float field, present and future (issue 9).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Where the four IDX files come from and how much of them is used."""

    sources: list[str] = Field(
        min_length=1,
        description="Tried in order: local folders holding the .gz (or plain) IDX files, "
        "then http(s) base URLs.",
    )
    cache_dir: str = Field("data/fashion-mnist", description="Verified IDX files land here.")
    prepared_dir: str = Field("data/prepared", description="Content-addressed derived data.")
    store_uri: str = Field(
        "auto",
        description="Where training workers get the prepared dataset: mlflow (the pipeline "
        "run's artifacts on the tracking server), a folder, or any fsspec URL (s3:// with "
        "the s3 extra); auto: mlflow when tracking to a server, else data/store.",
    )
    train_subset: int | None = Field(
        None, gt=0, le=60_000, description="Seeded random subset of the training set."
    )
    test_subset: int | None = Field(
        None, gt=0, le=10_000, description="Seeded random subset of the test set."
    )
    http_retries: int = Field(3, ge=0, le=10)
    http_backoff_s: float = Field(1.0, ge=0)
    http_timeout_s: float = Field(60.0, gt=0, description="Bound on each HTTP read.")
    http_deadline_s: float = Field(
        900.0,
        gt=0,
        description="Total time for one file from one mirror, retries included: a mirror "
        "that trickles bytes fails after this (plus at most one http_timeout_s read).",
    )
    download_deadline_s: float = Field(
        1800.0,
        gt=0,
        description="Total time for the whole download: every file, every mirror, every "
        "retry, the download task's own retries included (plus at most one read).",
    )


class AugmentConfig(_Strict):
    """The chapter's augmentation recipe (Keras preprocessing layers)."""

    n_augmented: int = Field(30_000, gt=0, description="Source images drawn with replacement.")
    rotation_degrees: float = Field(10.0, ge=0, le=180)
    zoom: float = Field(0.10, ge=0, lt=1)
    shear_degrees: float = Field(0.5, ge=0, lt=45)
    width_shift: float = Field(0.10, ge=0, lt=1)
    height_shift: float = Field(0.10, ge=0, lt=1)
    horizontal_flip: bool = True
    vertical_flip: bool = False
    fill_mode: Literal["nearest", "reflect", "wrap", "constant"] = "nearest"
    batch_size: int = Field(1024, gt=0, description="Images transformed per batched call.")


class TrainConfig(_Strict):
    """Which models to train and how (the chapter: Adam, 25 epochs, batch 32, split 0.25)."""

    models: list[str] = Field(min_length=1)
    epochs: int = Field(25, gt=0)
    batch_size: int = Field(32, gt=0)
    validation_split: float = Field(0.25, gt=0, lt=1)
    optimizer: Literal["adam"] = "adam"
    learning_rate: float = Field(0.001, gt=0)
    steps_per_execution: int = Field(1, gt=0)
    jit_compile: bool | Literal["auto"] = Field(
        "auto",
        description="XLA-compiled steps: auto (Keras: on for GPUs, off on CPU-only TensorFlow), "
        "true or false.",
    )
    precision: Precision = Field(
        "float32",
        description="Keras dtype policy while the model is built; mixed_* compute in 16 bits "
        "with float32 weights and a float32 softmax.",
    )
    eval_batch_size: int = Field(256, gt=0)
    checkpoint_dir: str = Field(
        "data/checkpoints",
        description="Per-epoch checkpoints (and run ownership locks), by run; a killed run "
        "with the same config and data resumes from them.",
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str], info: ValidationInfo) -> list[str]:
        # The registry lives in tasks/, which conf must not import: the caller passes the
        # known names in the validation context.
        known = (info.context or {}).get("known_models")
        if known is not None:
            unknown = [m for m in models if m not in known]
            if unknown:
                raise ValueError(
                    f"unknown model(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
                )
        if len(set(models)) != len(models):
            raise ValueError(f"models listed twice: {models}")
        return models


class TrackingConfig(_Strict):
    """Where MLflow writes (MLFLOW_TRACKING_URI in the environment wins over the profile)."""

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str | None = Field(
        "mlruns/artifacts",
        description="Artifact root for a new experiment on a local store; null for a server's "
        "default.",
    )
    experiment: str = "fashion-mnist-cnn"
    spool_dir: str = Field(
        "data/spool",
        description="Writes the tracking server could not take while it was away wait here; "
        "`fmnist spool upload` sends them.",
    )
    log_models: bool = True
    registered_model: str | None = Field(
        "fashion-mnist-cnn",
        description="Registry name for each run's best model (aliases champion/challenger); "
        "null to register nothing.",
    )
    promotion_floor: float = Field(
        0.80,
        ge=0,
        le=1,
        description="A model scoring below this test accuracy is never registered.",
    )
    promotion_rule: Literal["paired", "any_improvement"] = Field(
        "paired",
        description="How a run's model must beat the champion, both scored on this run's test "
        "images: paired (right on more of the images they disagree on, McNemar's exact "
        "two-sided p below significance_level) or any_improvement (any higher accuracy).",
    )
    significance_level: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Level of the paired tests: the promotion gate's, and the comparison's "
        "(Holm-corrected over the pairs of models).",
    )
    # MLflow reads these per request as MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES /
    # _BACKOFF_FACTOR (integers there); tracking.limits applies them. The defaults ride out
    # a server away for about a minute, and fail a call to a dead one in about 65 s.
    request_timeout_s: int = Field(30, gt=0, description="Bound on each tracking request.")
    max_retries: int = Field(5, ge=0, le=10, description="Retries of a failed request.")
    backoff_factor: int = Field(
        2, ge=0, le=120, description="Retry n waits backoff_factor * 2**(n-1) seconds."
    )
    system_metrics_interval_s: float = Field(
        10.0,
        ge=0,
        description="Sample CPU, memory and GPU use of each training run this often "
        "(MLflow system metrics); 0 turns it off.",
    )


class OrchestrationConfig(_Strict):
    """Where training runs: in the pipeline's own process, or as deployments on a work pool."""

    mode: TrainMode = Field(
        "inline",
        description="inline: train in the flow's process; deployments: one train-model flow "
        "run per model, on the work pool of the training deployment.",
    )
    train_deployment: str = "train-model/train-model"
    poll_interval_s: float = Field(5.0, gt=0)
    timeout_s: float | None = Field(None, gt=0, description="Give up waiting after this long.")


class ScheduleConfig(_Strict):
    """The pipeline deployment's schedule."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    active: bool = True


class DeployConfig(_Strict):
    """When the pipeline deployment runs by itself, and with which profile (the deployments
    themselves, pools included, are declared in prefect.yaml)."""

    scheduled_profile: str = DEFAULT_PROFILE
    schedule: ScheduleConfig = ScheduleConfig()


class ServingConfig(_Strict):
    """Serving the registered model (`fmnist serve`, the stack's serving service) and
    scoring folders of images (the score-images flow)."""

    model_uri: str | None = Field(
        None,
        description="What to serve and score; null: models:/<tracking.registered_model>"
        "@champion. An alias is followed: its new version is served after a promotion.",
    )
    host: str = Field("127.0.0.1", description="Where the serving front listens.")
    port: int = Field(5001, gt=0, lt=65536, description="5000 is the MLflow UI's.")
    poll_interval_s: float = Field(
        30.0, gt=0, description="How often the front asks the registry where the alias points."
    )
    start_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A new version must answer a prediction within this, else the old one "
        "stays. A promotion is served within poll_interval_s + start_timeout_s.",
    )
    drain_timeout_s: float = Field(
        60.0, ge=0, description="Requests already on the old version get this long to finish."
    )
    retry_after_s: float = Field(
        600.0, ge=0, description="A version that failed to start is tried again after this."
    )
    max_payload_mb: float = Field(
        8.0, gt=0, description="Larger requests are refused with 413 before they are read."
    )
    request_timeout_s: int = Field(
        60, gt=0, description="Bound on one prediction (MLflow's scoring server answers 504)."
    )
    workers: int = Field(1, gt=0, description="Scoring server processes per version.")
    batch_size: int = Field(256, gt=0, description="Images per model call in batch scoring.")
    score_source: str | None = Field(
        None,
        description="Folder or fsspec URL the score-images deployment scores on its schedule; "
        "null: no schedule (runs from the dashboard only, with a source given).",
    )
    score_cron: str = Field(
        "0 4 * * *", description="When the score-images deployment runs, if score_source is set."
    )


class Config(_Strict):
    """One resolved pipeline configuration."""

    profile: str
    seed: int = Field(42, ge=0)
    keras_backend: KerasBackend = Field(
        "tensorflow",
        description="Keras backend of every training process; KERAS_BACKEND in the "
        "environment (a work pool's job variables, CI) wins over the profile.",
    )
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig
    tracking: TrackingConfig = TrackingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    deploy: DeployConfig = DeployConfig()
    serving: ServingConfig = ServingConfig()

    @model_validator(mode="after")
    def _enough_data(self) -> Config:
        n = self.data.train_subset or 60_000
        n_val = int(n * self.train.validation_split)
        if n - n_val < 1 or n_val < 1:
            raise ValueError(
                f"data.train_subset={n} leaves no training or validation samples at "
                f"train.validation_split={self.train.validation_split}"
            )
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for logging as MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(value, list):
                out[prefix] = ",".join(map(str, value))
            else:
                out[prefix] = value

        walk("", self.model_dump())
        return out


PROFILES_DIR = Path(__file__).resolve().parent
