# Two commands do all the set-up: `make run` (the pipeline, quick profile) and `make test`.
SHELL := /bin/bash
# The interpreter the venv is built from: python3, unless the stack's service users could not
# run it (pyenv's under /root, mode 0700): then Debian's /usr/bin/python3 (stack/pick_python.py
# says why). PYTHON=... on the command line or in the environment still wins.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell python3 stack/pick_python.py 2>/dev/null || echo python3)
endif
VENV ?= .venv
PROFILE ?= quick
ARGS ?=
PYTEST_ARGS ?=
# `make test` in two pytest-xdist workers, each running whole groups (tests/parallel.py);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
DATA_DIR := /usr/share/datasets/fashion-mnist
BIN := $(VENV)/bin
# Optional extras on top of dev: EXTRAS=jax (JAX on the CPU), EXTRAS=gpu (TensorFlow and JAX
# with CUDA). Each set of extras has its own stamp, so asking for another one reinstalls.
EXTRAS ?=
comma := ,
STAMP := $(VENV)/.installed$(if $(EXTRAS),-$(subst $(comma),-,$(EXTRAS)))

.PHONY: run test test-fast lint format data ui serve clean help stack-up stack-down stack-status \
	gpu-setup bench bench-quick mutate lock

help:
	@echo "make run    [PROFILE=quick|book|smoke] [ARGS='train.epochs=5 ...']  run the pipeline"
	@echo "make test   [PYTEST_ARGS='-m \"not e2e and not service and not browser\"'] [TEST_WORKERS=2]  run the tests"
	@echo "make test-fast [PYTEST_ARGS=...]   the fast part (tests/unit: no stack, no Prefect server, no flows)"
	@echo "make ui                                                              MLflow UI on mlruns/"
	@echo "make serve  [ARGS='--port 5002 serving.poll_interval_s=10']           the champion over HTTP"
	@echo "make stack-up | stack-down | stack-status   local PostgreSQL + Prefect + MLflow + workers (.stack/)"
	@echo "make mutate [MODULES='stages/download.py ...'] [MUTATE_TESTS='tests/unit/...']   mutation testing -> docs/mutation-report.md"
	@echo "make lint | make format | make clean"
	@echo "make lock [UPGRADE=1]   re-resolve requirements.lock (what every install and worker uses)"
	@echo "make gpu-setup          CUDA TensorFlow + JAX into .venv (then: make run EXTRAS=gpu ...)"
	@echo "make bench-quick [BENCH_ARGS=...]   the benchmark's CPU mode (minutes; bench/results/)"
	@echo "make bench [PROFILE=book|fast] [BENCH_ARGS=...]   the benchmark's GPU mode"

# The virtual environment, (re)installed when pyproject.toml or the lock changes. Every
# package comes at the version requirements.lock pins (pip's constraints: what is locked is
# installed at its pin, whatever asks for it); a training run on any worker compares its own
# packages with the lock of the commit it runs (stages/environment.py).
LOCK := requirements.lock
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev$(if $(EXTRAS),$(comma)$(EXTRAS))]'
	touch $(STAMP)

# Re-resolve the lock after a change to pyproject.toml's dependencies: pip-compile keeps the
# pins it can and honours this machine's pip configuration (indexes, find-links);
# UPGRADE=1 moves every pin to the newest release allowed. Commit requirements.lock.
UPGRADE ?=
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4'
	$(BIN)/pip-compile --quiet $(if $(UPGRADE),--upgrade) --extra dev --extra jax --strip-extras \
	  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --output-file $(LOCK) pyproject.toml

# Debian's copy of Fashion-MNIST, where apt-get is usable; elsewhere the pipeline falls back
# to the HTTP mirrors, so a missing package or missing root is never an error here.
data:
	@if [ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	    || echo "warning: apt-get could not install dataset-fashion-mnist; the HTTP mirrors will be used"; \
	else echo "note: $(DATA_DIR) missing and apt-get unusable; the HTTP mirrors will be used"; fi

run: $(STAMP) data
	$(BIN)/fmnist run --profile $(PROFILE) $(ARGS)

# The champion of the local store over HTTP on 127.0.0.1:5001 (docs/serving.md).
serve: $(STAMP)
	$(BIN)/fmnist serve $(ARGS)

test: $(STAMP) data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The fast part, the loop to run on every change: tests/unit (plain logic, the tasks through
# `.fn` with stand-ins, the tracker on a temporary store, the stack's pure parts); every
# family that starts servers or subprocesses left out (docs/testing.md).
FAST_MARKERS := not e2e and not service and not browser and not faults and not serving and not bench and not remote
test-fast: $(STAMP) data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m '$(FAST_MARKERS)' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data mlruns/mlflow.db mlruns/artifacts .pytest_cache mutants

# Mutation testing (mutmut, config in pyproject.toml) of the plain modules, by the fast tests;
# not in CI: about half an hour on 2 cores. MODULES narrows it to some of the files listed in
# [tool.mutmut] only_mutate. Starts afresh (mutants/ is removed): results depend on the tests.
# MUTATE_TESTS narrows the tests too (node id prefixes, e.g. tests/unit/test_stack_pools.py):
# quicker for a few modules, and a lower bound on the score (fewer tests to kill a mutant).
MODULES ?=
MUTATE_TESTS ?=
MUTATE_JOBS ?= 2
MUTATE_REPORT ?= docs/mutation-report.md
MUTATE_STAMP := $(VENV)/.installed-mutate
$(MUTATE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev,mutate]'
	touch $(MUTATE_STAMP)

mutate: $(MUTATE_STAMP) data
	rm -rf mutants
	start=$$(date +%s); \
	FMNIST_MUTATE_TESTS='$(MUTATE_TESTS)' $(BIN)/mutmut run --max-children $(MUTATE_JOBS) \
	  $(foreach m,$(MODULES),'$(subst /,.,$(basename $(patsubst %/__init__.py,%.py,$(m)))).x*') >mutants.log 2>&1 \
	  || { tail -40 mutants.log; exit 1; }; \
	$(BIN)/python scripts/mutation_report.py --seconds $$(( $$(date +%s) - start )) \
	  --modules '$(MODULES)' --before docs/mutation-baseline.json > $(MUTATE_REPORT)
	@grep -m1 -A20 '^| module' $(MUTATE_REPORT)

# The service stack, natively (no Docker), under supervisord: PostgreSQL, Prefect server,
# MLflow server (both authenticated), one worker per pool, deployments applied; state, logs,
# data and the generated secrets (.stack/secrets.env, 0600) under .stack/ (stack/).
stack-up: $(STAMP)
	$(BIN)/python -m fmnist.stack up

stack-down:
	$(BIN)/python -m fmnist.stack down

stack-status:
	$(BIN)/python -m fmnist.stack status

# -- GPU install and the benchmark (issue 8) -------------------------------------------------
# One command on a Linux machine with an NVIDIA GPU: TensorFlow and JAX with their CUDA
# wheels. Afterwards pass EXTRAS=gpu to the other targets (make run EXTRAS=gpu ...).
gpu-setup:
	$(MAKE) $(VENV)/.installed-gpu EXTRAS=gpu
	$(BIN)/python -c "import jax; print('jax devices:', jax.devices())"

# The benchmark times the project's trainer and plain model.fit side by side, one process per
# model; it imports only keras, numpy and the backend. KERAS_BACKEND picks the backend.
BENCH_ARGS ?=
bench: $(STAMP) data
	$(BIN)/python -m fmnist.bench --profile $(if $(filter fast,$(PROFILE)),fast,book) $(BENCH_ARGS)

bench-quick: $(STAMP) data
	$(BIN)/python -m fmnist.bench --quick $(BENCH_ARGS)
