"""The CLI refuses bad configuration before Prefect or MLflow is touched."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from fmnist.flows.cli import EXIT_CONFIG, main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--profile", "smoke", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["run", "--profile", "smoke", "train.batch_size=0"], "train.batch_size"),
        (["run", "--profile", "smoke", "train.models=[vgg, lenet]"], "'lenet'"),
        (["run", "--profile", "nope"], "unknown profile 'nope'"),
    ],
)
def test_bad_config_exits_2_naming_it(args, message, capsys):
    assert main(args) == EXIT_CONFIG
    assert message in capsys.readouterr().err


def test_bad_config_opens_no_mlflow_run(tmp_path):
    # In a fresh interpreter: the error must come before mlflow and prefect are imported,
    # and no tracking store may be created.
    store = tmp_path / "mlflow.db"
    code = textwrap.dedent(
        f"""
        import sys
        from fmnist.flows.cli import main
        rc = main(["run", "--profile", "smoke", "train.models=[resnet]",
                   "tracking.tracking_uri=sqlite:///{store}"])
        assert "mlflow" not in sys.modules and "prefect" not in sys.modules, "imported"
        sys.exit(rc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "unknown model(s) 'resnet'" in proc.stderr
    assert not store.exists()


def test_config_command_prints_resolved_yaml(capsys):
    assert main(["config", "--profile", "smoke", "train.epochs=4"]) == 0
    out = capsys.readouterr().out
    assert "profile: smoke" in out and "epochs: 4" in out


def test_backend_on_the_command_line_reaches_the_config(capsys):
    assert main(["config", "--profile", "smoke", "keras_backend=jax"]) == 0
    assert "keras_backend: jax" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
def test_a_backend_that_is_not_installed_exits_2_before_prefect(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from fmnist.flows.cli import main
        rc = main(["run", "--profile", "smoke", "keras_backend=torch"])
        assert "prefect" not in sys.modules and "keras" not in sys.modules, "imported"
        sys.exit(rc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "torch is not installed" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certify", "--seeds", "1", "--profile", "smoke"], "--seeds 1: at least 2"),
        (["certify", "--seeds", "3", "--profile", "smoke", "train.epoch=3"], "'train.epoch'"),
        (["certify", "--profile", "smoke", "tracking.significance_level=1.5"], "significance"),
        (["certify", "--profile", "smoke", "tracking.promotion_rule=coin"], "promotion_rule"),
    ],
)
def test_certify_refuses_bad_settings_before_prefect_and_mlflow(args, message, tmp_path):
    store = tmp_path / "mlflow.db"
    code = textwrap.dedent(
        f"""
        import sys
        from fmnist.flows.cli import main
        rc = main({[*args, f"tracking.tracking_uri=sqlite:///{store}"]!r})
        assert "mlflow" not in sys.modules and "prefect" not in sys.modules, "imported"
        sys.exit(rc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert message in proc.stderr
    assert not store.exists()
