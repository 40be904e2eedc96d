"""`fmnist serve`: the registered model over HTTP on 127.0.0.1, following its alias.

    fmnist serve [--model URI] [--host H] [--port P] [--tracking-uri U] [--wait] [key=value ...]
    python -m fmnist.flows.serve ...                      (the same, for supervisord)

One process: the front (stages/proxy.py: size limit, optional basic auth, X-Model-Version,
/version) and, behind it, MLflow's scoring server for the version in use, in a process of
its own. Every `serving.poll_interval_s` the front asks the registry where the alias
(champion) points; a new version gets a scoring server of its own, is switched to once it
answers a prediction, and the old one is stopped after its last request (stages/swap.py).

Settings: the profile's `serving:` section (overrides as key=value); MLFLOW_TRACKING_URI
(and MLFLOW_TRACKING_USERNAME / _PASSWORD for an authenticated server) as everywhere;
FMNIST_SERVING_AUTH=user:password makes the front ask clients for basic auth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmnist.conf import DEFAULT_PROFILE, ConfigError, load_config
from fmnist.conf.schema import ServingConfig
from fmnist.flows.children import free_port, start_child
from fmnist.stages.swap import Backend, Swapper, Target

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # both drain and stop the scoring servers
AUTH_ENV = "FMNIST_SERVING_AUTH"  # user:password clients must send; unset: no auth
# Zeros of the training images' shape: every version answers it, whether it is the served
# model (tracking/pyfunc.py) or a Keras model registered before it existed.
PROBE = json.dumps({"inputs": [[[[0.0]] * 28] * 28]}).encode()


class ScoringServer:
    """MLflow's scoring server for one version: its own folder, port and process group."""

    def __init__(self, target: Target, tracking_uri: str, cfg: ServingConfig, workdir: Path):
        from fmnist.tracking.serving import download_model, scoring_command

        self.target = target
        self.folder = Path(tempfile.mkdtemp(prefix="version-", dir=workdir))
        try:
            model_dir = download_model(tracking_uri, target, self.folder)
            port = free_port("127.0.0.1")
            argv, env = scoring_command(
                model_dir, "127.0.0.1", port, cfg.request_timeout_s, cfg.workers
            )
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
            self.url = f"http://127.0.0.1:{port}"
            # Ctrl-C reaches the front alone, which stops it in order; should the front be
            # killed outright, the kernel stops it too (flows/children.py).
            self.process = start_child(argv, env)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to its process group (uvicorn and its workers), SIGKILL after 10 s."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def answers_prediction(backend: Backend, timeout_s: float, stop: threading.Event) -> None:
    """Return once the backend answers a real prediction; raise if it exits, answers an
    error, does not answer within timeout_s, or serving is stopping."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(
        f"{backend.url}/invocations", PROBE, {"Content-Type": "application/json"}
    )
    while True:
        if stop.is_set():
            raise RuntimeError("serving is stopping")
        if not backend.alive():
            raise RuntimeError("its scoring server exited")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                predictions = json.loads(response.read())["predictions"]
            if len(predictions) != 1:
                raise RuntimeError(f"{len(predictions)} predictions for one image")
            return
        except urllib.error.HTTPError as exc:
            answer = exc.read()[:300]
            raise RuntimeError(f"a test prediction got HTTP {exc.code}: {answer!r}") from None
        except OSError:  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {timeout_s:g} s") from None
            stop.wait(0.5)


def curl_example(url: str, image: str = "docs/samples/ankle-boot.png") -> str:
    """A curl command that sends a PNG (base64 in JSON) to the served model."""
    return (
        f"curl -s {url}/invocations -H 'Content-Type: application/json' \\\n"
        f'  -d "{{\\"inputs\\": [\\"$(base64 -w0 {image})\\"]}}"'
    )


def serve(
    model_uri: str,
    tracking_uri: str,
    cfg: ServingConfig,
    *,
    wait: bool = False,
    credentials: str | None = None,
) -> int:
    """Serve until SIGTERM or Ctrl-C; 1 if the first model cannot be served (unless wait)."""
    from fmnist.stages.proxy import FrontServer
    from fmnist.tracking.serving import resolve_target

    stop = threading.Event()
    workdir = Path(tempfile.mkdtemp(prefix="fmnist-serve-"))

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} serve: {message}", flush=True)

    swapper = Swapper(
        lambda: resolve_target(tracking_uri, model_uri),
        lambda target: ScoringServer(target, tracking_uri, cfg, workdir),
        lambda backend: answers_prediction(backend, cfg.start_timeout_s, stop),
        drain_timeout_s=cfg.drain_timeout_s,
        retry_after_s=cfg.retry_after_s,
        log=log,
    )
    front = FrontServer(
        (cfg.host, cfg.port),
        swapper,
        max_bytes=int(cfg.max_payload_mb * 2**20),
        timeout_s=cfg.request_timeout_s,
        credentials=credentials,
    )
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    # Listening first: health checks answer 503 (not "refused") while the model starts.
    threading.Thread(target=front.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    try:
        log(f"{model_uri} from {tracking_uri}, at {front.url}")
        swapper.follow()
        if swapper.target is None and not wait:
            log(f"nothing to serve: is there a {model_uri}? (`make run` registers one)")
            return 1
        if swapper.target is not None:
            log(f"ready: version {swapper.target.version} at {front.url}. Try:")
            print(curl_example(front.url), flush=True)
        if "@" in model_uri:
            log(f"following the alias every {cfg.poll_interval_s:g} s")
        # For a fixed version too: a scoring server that died is started again.
        swapper.run(cfg.poll_interval_s, stop)
        return 0
    finally:
        front.shutdown()
        front.server_close()
        swapper.close()
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fmnist serve` (and of `python -m fmnist.flows.serve`)."""
    parser.add_argument(
        "--model", default=None, help="model URI (default: serving.model_uri, else the champion)"
    )
    parser.add_argument("--host", default=None, help="listen address (default: serving.host)")
    parser.add_argument("--port", type=int, default=None, help="default: serving.port (5001)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else the profile's)",
    )
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="profile of the settings")
    parser.add_argument(
        "--wait", action="store_true", help="keep running until the model is registered"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. serving.workers=2")


def run(args: argparse.Namespace) -> int:
    """`fmnist serve` with parsed arguments."""
    from fmnist.conf.settings import apply_process_defaults
    from fmnist.stages.backend import BackendError, apply_backend, resolve_backend
    from fmnist.tracking import RequestLimits, resolve_tracking_uri

    try:
        cfg = load_config(args.profile, list(args.overrides))
    except ConfigError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
    apply_process_defaults()
    try:  # the scoring servers inherit it: the profile's backend, unless KERAS_BACKEND says
        apply_backend(resolve_backend(cfg.keras_backend))
    except BackendError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
    serving = cfg.serving.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    uri = args.tracking_uri or resolve_tracking_uri(cfg.tracking.tracking_uri)
    RequestLimits.of(cfg.tracking).apply()  # a registry away fails a poll within a bound
    model = args.model or serving.model_uri or _champion(cfg)
    # The front fetches each version; its scoring server only reads the local copy.
    return serve(model, uri, serving, wait=args.wait, credentials=os.environ.get(AUTH_ENV))


def _champion(cfg: Any) -> str:
    if cfg.tracking.registered_model is None:
        raise SystemExit("fmnist: tracking.registered_model is null: give --model")
    return f"models:/{cfg.tracking.registered_model}@champion"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m fmnist.flows.serve`."""
    parser = argparse.ArgumentParser(prog="python -m fmnist.flows.serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
