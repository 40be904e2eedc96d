# The MLflow tracking server of the service stack (docker/compose.yaml): runs and models in
# PostgreSQL, artifacts in a volume at /mlartifacts that the server itself serves
# (--serve-artifacts), so clients log artifacts over HTTP and need no storage credentials.
# Build from the repository root:
#   docker build -f docker/mlflow.Dockerfile -t fashion-mnist-mlflow .
# The flags of the CMD come from the environment: the compose file sets
# MLFLOW_BACKEND_STORE_URI (postgresql://...) and restates the artifact folder and the
# allowed hosts; the SQLite default below only lets the image start on its own.
FROM python:3.11-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
# [auth]: the basic-auth app (Flask-WTF).
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" psycopg2-binary

# The basic-auth app behind the stack's origin check (stack/mlflow_app.py, MLflow and the
# standard library only), installed as a tiny distribution of its own: the `mlflow.app`
# entry point `fmnist-basic-auth`. MLflow alone admits browser calls from any localhost port
# whatever --cors-allowed-origins says; this app refuses origins not in that list.
COPY stack/mlflow_app.py /opt/fmnist-mlflow-app/fmnist_mlflow_app.py
RUN printf '%s\n' '[project]' 'name = "fmnist-mlflow-app"' 'version = "1.0"' \
      '[project.entry-points."mlflow.app"]' \
      'fmnist-basic-auth = "fmnist_mlflow_app:create_app"' \
      '[tool.setuptools]' 'py-modules = ["fmnist_mlflow_app"]' \
      > /opt/fmnist-mlflow-app/pyproject.toml \
 && pip install --no-cache-dir /opt/fmnist-mlflow-app

# MLflow 3's server (3.17 checked) answers 403 "Invalid Host header" to any Host that is
# not localhost or a private IP unless --allowed-hosts says otherwise; clients in other
# containers reach it as http://mlflow:5000, so that name is allowed next to the loopback
# names the published port is reached by. Browsers: the UI's own origin only (compose.yaml
# sets MLFLOW_SERVER_CORS_ALLOWED_ORIGINS; the default below is the published port's).
ENV MLFLOW_BACKEND_STORE_URI=sqlite:////mlartifacts/mlflow.db \
    MLFLOW_ARTIFACTS_DESTINATION=/mlartifacts \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_SERVER_ALLOWED_HOSTS="mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*" \
    MLFLOW_SERVER_CORS_ALLOWED_ORIGINS="http://127.0.0.1:5000,http://localhost:5000" \
    MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PYTHONUNBUFFERED=1

# The basic-auth app: users in /mlartifacts/basic_auth.db, READ for users without a grant of
# their own (a read-only user needs nothing more), the admin created on the first start
# with MLFLOW_AUTH_ADMIN_PASSWORD (no password in this file; MLflow has no default one).
RUN mkdir -p /etc/mlflow && printf '%s\n' '[mlflow]' 'default_permission = READ' \
      'database_uri = sqlite:////mlartifacts/basic_auth.db' 'admin_username = admin' \
      'authorization_function = mlflow.server.auth:authenticate_request_basic_auth' \
      > /etc/mlflow/basic_auth.ini

# uid 10001: the server's alone (the workers are 10002, Prefect's server 10003).
RUN useradd --create-home --uid 10001 mlflow \
 && mkdir -p /mlartifacts \
 && chown mlflow:mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow
VOLUME ["/mlartifacts"]
EXPOSE 5000

# /health is exempt from the Host-header check, so this probe works under any name.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLFLOW_PORT', '5000'), timeout=4)"

# A shell so that the environment parameterises the flags; exec leaves mlflow as PID 1,
# where `docker stop`'s SIGTERM reaches it.
CMD ["sh", "-c", "exec mlflow server --app-name fmnist-basic-auth --backend-store-uri \"$MLFLOW_BACKEND_STORE_URI\" --serve-artifacts --artifacts-destination \"$MLFLOW_ARTIFACTS_DESTINATION\" --host \"$MLFLOW_HOST\" --port \"$MLFLOW_PORT\" --allowed-hosts \"$MLFLOW_SERVER_ALLOWED_HOSTS\" --cors-allowed-origins \"$MLFLOW_SERVER_CORS_ALLOWED_ORIGINS\""]
