"""Choosing the Keras backend: precedence, memory settings, and clear errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from fmnist.stages.backend import BACKENDS, BackendError, apply_backend, resolve_backend


def test_environment_wins_over_the_profile_and_an_explicit_choice_over_both(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert resolve_backend("tensorflow") == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert resolve_backend("tensorflow") == "jax"
    assert resolve_backend("torch", explicit=True) == "torch"


def test_applying_the_running_backend_sets_the_memory_settings(monkeypatch):
    for key in ("TF_FORCE_GPU_ALLOW_GROWTH", "XLA_PYTHON_CLIENT_PREALLOCATE", "KERAS_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    running = keras.backend.backend()
    assert apply_backend(running) == running
    assert os.environ["KERAS_BACKEND"] == running
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_an_operators_memory_setting_is_kept(monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    apply_backend(keras.backend.backend())
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_unknown_backend_names_the_choices():
    with pytest.raises(BackendError, match=r"backend 'mxnet'.*tensorflow, jax, torch"):
        apply_backend("mxnet")


def test_switching_after_keras_was_imported_is_refused(monkeypatch):
    running = keras.backend.backend()
    others = [b for b in BACKENDS if b != running and importlib.util.find_spec(b) is not None]
    if not others:
        pytest.skip("only one Keras backend is installed")
    monkeypatch.setenv("KERAS_BACKEND", running)
    with pytest.raises(BackendError, match=f"already imported with the '{running}' backend"):
        apply_backend(others[0])
    assert os.environ["KERAS_BACKEND"] == running


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_a_backend_that_is_not_installed_says_how_to_install_it():
    with pytest.raises(BackendError, match="keras_backend=torch but torch is not installed"):
        apply_backend("torch")


def test_a_fresh_process_trains_on_the_backend_it_applied(tmp_path):
    # What cli.py and the train-model flow do: apply first, import keras afterwards.
    backend = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    code = textwrap.dedent(
        f"""
        import os, sys
        os.environ.pop("KERAS_BACKEND", None)
        from fmnist.stages.backend import apply_backend
        apply_backend({backend!r})
        assert "keras" not in sys.modules
        import keras
        print(keras.backend.backend())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == backend
