"""The pipeline's names in MLflow: metric, param and tag keys, one constant each.

The per-epoch keys are Keras' (stages/train.py); the rest are what the tasks log and what
the flows, compare and promote read back.
"""

from fmnist.stages.train import ACCURACY, EPOCH_SECONDS, HISTORY_KEYS, LOSS, VAL_ACCURACY, VAL_LOSS

# Metrics of a model's run.
TEST_ACCURACY = "test_accuracy"
TEST_ACCURACY_CI_LOW = "test_accuracy_ci_low"  # its 95 % Wilson interval
TEST_ACCURACY_CI_HIGH = "test_accuracy_ci_high"
TEST_LOSS = "test_loss"
TEST_F1 = "test_f1"  # test_f1.<class>
TRAINING_SECONDS = "training_seconds"
SAMPLES_PER_SECOND = "samples_per_second"

# Params of a model's run.
PARAM_COUNT = "param_count"
TRAIN_SAMPLES = "train_samples"
VAL_SAMPLES = "val_samples"

# Tags.
MODEL = "model"  # a model's run: which registry model it trained
PROFILE = "profile"
FLOW = "flow"  # a parent run: the flow that made it (reclaim finds pipeline runs by it)
CHAPTER_TEST_ACCURACY = "chapter_test_accuracy"
CHAPTER_PARAMS = "chapter_params"
PARENT_RUN_ID = "parent_run_id"  # a registered version: the pipeline run it came from
TEST_SET_DIGEST = "test_set_digest"  # a model's run: the test images its predictions are of
RUN_KEY = "run_key"  # a child run's name under its parent: the model, or model-seedN
SEED = "seed"  # a certificate's child run: its training seed
CERTIFICATE = "certificate"  # a certificate's parent: certificate.<column>.<model> metrics
CERTIFICATE_SEEDS = "certificate.seeds"  # a certificate's parent run: the seeds, in order
PACKAGES_DIGEST = "packages_digest"  # a model's run: SHA-256 of its packages file
PACKAGE = "package."  # package.keras, package.numpy, ...: a model's run's key packages

# Artifacts.
PREDICTIONS = "predictions.csv"  # a model's run: each test image's label and predicted class
PACKAGES_FILE = "environment/packages.txt"  # every installed distribution, name==version

__all__ = [
    "ACCURACY",
    "CERTIFICATE",
    "CERTIFICATE_SEEDS",
    "CHAPTER_PARAMS",
    "CHAPTER_TEST_ACCURACY",
    "EPOCH_SECONDS",
    "FLOW",
    "HISTORY_KEYS",
    "LOSS",
    "MODEL",
    "PACKAGE",
    "PACKAGES_DIGEST",
    "PACKAGES_FILE",
    "PARAM_COUNT",
    "PARENT_RUN_ID",
    "PREDICTIONS",
    "PROFILE",
    "RUN_KEY",
    "SAMPLES_PER_SECOND",
    "SEED",
    "TEST_ACCURACY",
    "TEST_ACCURACY_CI_HIGH",
    "TEST_ACCURACY_CI_LOW",
    "TEST_F1",
    "TEST_LOSS",
    "TEST_SET_DIGEST",
    "TRAINING_SECONDS",
    "TRAIN_SAMPLES",
    "VAL_ACCURACY",
    "VAL_LOSS",
    "VAL_SAMPLES",
]
