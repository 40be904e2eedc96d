"""The served model as MLflow's "model from code": log_keras_model hands this file to
mlflow.pyfunc.log_model, which copies it into the model and runs it when the model is loaded
(no pickle of the class; the code it imports is this installed project's)."""

from mlflow.models import set_model

from fmnist.tracking.pyfunc import FashionMnistModel

set_model(FashionMnistModel())
