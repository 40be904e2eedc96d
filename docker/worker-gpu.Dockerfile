# The GPU worker of the service stack (docker/compose.yaml, profile `gpu`): a Prefect
# process worker that polls the `gpu` work pool, on TensorFlow's GPU image (CUDA and cuDNN
# as TensorFlow expects them). Build from the repository root:
#   docker build -f docker/worker-gpu.Dockerfile -t fashion-mnist-worker-gpu .
# It needs the NVIDIA Container Toolkit on the host (compose reserves the GPU for it).
#
# The base is not python:3.11: TensorFlow's GPU images are Ubuntu (22.04 for the 2.1x
# line) with CUDA from nvidia/cuda, and a Python that their build picks, python3.11 from
# the deadsnakes PPA so far, with TensorFlow and its CUDA wheels installed by pip into the
# system's dist-packages. The project wants Python >=3.11,<3.14 and TensorFlow 2.21.x
# (pyproject.toml); the first RUN below fails the build, saying what it found, when a tag
# brings another Python or another TensorFlow (pip would then install a second TensorFlow
# without the CUDA wheels that match it). Another tag: --build-arg TF_IMAGE=...
ARG TF_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${TF_IMAGE}

RUN python3 -c "import sys; from importlib.metadata import version; \
v = sys.version_info[:2]; tf = version('tensorflow'); \
assert (3, 11) <= v < (3, 14), f'Python {sys.version} here; the project needs >=3.11,<3.14'; \
assert tf.startswith('2.21.'), f'TensorFlow {tf} here; the project needs 2.21.x'"

# Debian's copy of Fashion-MNIST, from Ubuntu's universe section (same package).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

# A virtual environment that sees the system's packages: it reuses the image's TensorFlow
# and CUDA wheels (tensorflow>=2.21,<2.22 is then already satisfied), while what it must
# upgrade lands in the venv. A plain `pip install .` into the system would try to replace
# Ubuntu's apt-installed Python packages (blinker 1.4 from software-properties-common is
# the known one, needed newer by Flask, hence MLflow), and pip cannot uninstall those:
# "Cannot uninstall 'blinker'. It is a distutils installed project".
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY conf conf
COPY flows flows
COPY tasks tasks
COPY stages stages
COPY tracking tracking
COPY stack stack
# The clients pinned to the servers' versions, as in worker-cpu.Dockerfile.
ARG PREFECT_VERSION=3.9.1
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir ".[gpu]" "prefect==${PREFECT_VERSION}" "mlflow==${MLFLOW_VERSION}"

# TF_FORCE_GPU_ALLOW_GROWTH: take GPU memory as needed, not all of it at start-up.
# No KERAS_BACKEND: the profile decides, or the work pool's `keras_backend` job variable.
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

# The same unprivileged user (uid 10002) as the CPU worker, so that both can write to the
# dataset-store volume they share at /app/data.
RUN useradd --create-home --uid 10002 app \
 && mkdir -p /app/data \
 && chown app:app /app /app/data
USER app
VOLUME ["/app/data"]

CMD ["prefect", "worker", "start", "--pool", "gpu", "--type", "process", "--with-healthcheck"]
