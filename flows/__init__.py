"""Prefect flows (pipeline.py, train_model.py, certify.py), the fan-out to training deployments
(dispatch.py) and the `fmnist` command (cli.py).

The flows' names and entrypoints, one home for each (deployments, reclaim and provenance
read them from here):
"""

PIPELINE_FLOW = "fashion-mnist-pipeline"
PIPELINE_ENTRYPOINT = "flows/pipeline.py:fashion_mnist_pipeline"
TRAIN_FLOW = "train-model"
TRAIN_ENTRYPOINT = "flows/train_model.py:train_model_flow"
SCORE_FLOW = "score-images"
SCORE_ENTRYPOINT = "flows/score_images.py:score_images"
CERTIFY_FLOW = "certify"
CERTIFY_ENTRYPOINT = "flows/certify.py:certify"
