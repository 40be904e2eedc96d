"""The tag keys the tracking layer itself reads and writes, one name each.

MLflow's own keys (`mlflow.*`) are what its UI reads; the others are ours. The pipeline's
metric and tag keys (test_accuracy, model, ...) are the tasks' (tasks/keys.py): this layer
knows runs, not models.
"""

PARENT = "mlflow.parentRunId"  # nests a run under another in the UI
NOTE = "mlflow.note.content"  # a run's Markdown description
FAILURE_REASON = "failure_reason"  # why a run ended FAILED or KILLED
MODEL_URI = "model_uri"  # the model a run logged, for the registry step
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values
MAX_TAG_LENGTH = 5000  # a failure reason is cut to this
