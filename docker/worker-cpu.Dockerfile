# The CPU worker of the service stack (docker/compose.yaml): a Prefect process worker that
# polls the `cpu` work pool and runs the pipeline's flow runs in subprocesses of its own,
# in this image. Build from the repository root:
#   docker build -f docker/worker-cpu.Dockerfile -t fashion-mnist-worker-cpu .
# At run time it needs PREFECT_API_URL (the Prefect server's API) and MLFLOW_TRACKING_URI
# (the MLflow server); the compose file sets both. Prepared datasets go to /app/data, the
# dataset-store volume shared with the GPU worker.
FROM python:3.11-slim-bookworm

# Debian's copy of Fashion-MNIST (/usr/share/datasets/fashion-mnist), so that no flow run
# downloads the data set.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY conf conf
COPY flows flows
COPY tasks tasks
COPY stages stages
COPY tracking tracking
COPY stack stack
# The clients pinned to the servers' versions (docker/mlflow.Dockerfile, the Prefect image
# in docker/compose.yaml): pyproject.toml allows any 3.x, and a client newer than its
# server is not guaranteed to speak its API.
ARG PREFECT_VERSION=3.9.1
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir . "prefect==${PREFECT_VERSION}" "mlflow==${MLFLOW_VERSION}"

# No KERAS_BACKEND: the profile decides, or the work pool's `keras_backend` job variable.
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

# An unprivileged user. A named volume mounted on /app/data starts out with this folder's
# owner, so the flow runs can write there; /app itself is theirs too, for whatever else a
# run started in /app writes next to its relative paths (the code stays root's).
RUN useradd --create-home --uid 10002 app \
 && mkdir -p /app/data \
 && chown app:app /app /app/data
USER app
VOLUME ["/app/data"]

# --type process: the pool is created as a process pool if it does not exist yet.
# --with-healthcheck: GET http://127.0.0.1:8080/health answers while the worker polls.
CMD ["prefect", "worker", "start", "--pool", "cpu", "--type", "process", "--with-healthcheck"]
