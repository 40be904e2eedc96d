"""The serving benchmark: requests per second and p50 / p99 latency of the served model on
this machine, for one image and for batches of 64, ours beside `mlflow models serve` of the
plain Keras flavour. A benchmark, not a test: it measures and writes, it asserts nothing.

    python -m fmnist.bench.serve [--model-name vgg] [--seconds 20] [--clients 1 4]

Ours: `fmnist serve` (the front + MLflow's scoring server + the pyfunc), sent what users send
(base64 PNGs) and the plain flavour's payload (normalised floats). Plain: the same Keras
model saved with mlflow.keras and served by `mlflow models serve --env-manager local`, sent
floats (all it takes). The model is the chapter's architecture with fresh weights: the work
per image does not depend on the weights' values. One server runs at a time.

Writes bench/results/serving-cpu<N>.json and .md. Needs the project's venv (mlflow).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
READY_S = 600


def payloads(n: int) -> dict[str, bytes]:
    """JSON bodies of n images: as base64 PNGs, and as (n, 28, 28, 1) floats."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    pngs = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(base64.b64encode(buffer.getvalue()).decode())
    floats = (pixels[..., None] / 255.0).round(4).tolist()
    return {
        "png": json.dumps({"inputs": pngs}).encode(),
        "floats": json.dumps({"inputs": floats}).encode(),
    }


def load(url: str, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads posting body for `seconds` (after a warm-up): rps, p50, p99 (ms)."""
    import requests

    def one(session: requests.Session) -> float:
        start = time.perf_counter()
        r = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
        return time.perf_counter() - start

    with requests.Session() as session:
        for _ in range(5):  # first calls trace the model for this batch size
            one(session)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.perf_counter() < deadline:
                try:
                    latencies.append(one(session))
                except Exception as exc:  # counted, not raised: a benchmark reports it
                    errors.append(repr(exc))

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


@contextmanager
def running(argv: list[str], url: str, log: Path) -> Iterator[None]:
    """A server process, ready when GET url answers 200; stopped (its group) afterwards."""
    import requests

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited: {log.read_text()[-3000:]}")
            try:
                if requests.get(url, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv[:4]} not ready in {READY_S} s")
            time.sleep(1)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def prepare(folder: Path, model_name: str) -> tuple[str, str, Path]:
    """The model logged as ours (registered as bench/1 in a SQLite store) and saved as the
    plain Keras flavour; returns (tracking URI, our model URI, the plain model's folder)."""
    import mlflow.keras

    from fmnist.stages.models import get_spec
    from fmnist.tracking import open_tracker

    model = get_spec(model_name).build()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    example = np.zeros((8, 28, 28, 1), np.float32)
    tracker = open_tracker(f"sqlite:///{folder}/mlflow.db", "bench", str(folder / "artifacts"))
    with tracker.run(f"bench-{model_name}") as run_id:
        uri = tracker.log.keras_model(run_id, model, example)
    version = tracker.registry.register(uri, "bench")
    plain = folder / "plain-keras"
    mlflow.keras.save_model(model, str(plain), pip_requirements=["keras"])
    return tracker.tracking_uri, f"models:/bench/{version}", plain


def measure(args: argparse.Namespace, folder: Path) -> list[dict]:
    """Every (server, payload, batch, clients) combination, one server at a time."""
    from fmnist.flows.serve import free_port

    tracking_uri, ours_uri, plain_dir = prepare(folder, args.model_name)
    bodies = {n: payloads(n) for n in (1, 64)}
    rows = []
    port = free_port("127.0.0.1")
    ours = [sys.executable, "-m", "fmnist.flows.serve", "--tracking-uri", tracking_uri]
    ours += ["--model", ours_uri, "--port", str(port), "serving.max_payload_mb=64"]
    plain = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(plain_dir)]
    plain += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    for server, argv, kinds in (("ours", ours, ("png", "floats")), ("plain", plain, ("floats",))):
        with running(argv, f"{url}/ping", folder / f"{server}.log"):
            for n in (1, 64):
                for kind in kinds:
                    for clients in args.clients:
                        result = load(f"{url}/invocations", bodies[n][kind], clients, args.seconds)
                        row = {"server": server, "payload": kind, "images": n, "clients": clients}
                        rows.append(row | result)
                        print(json.dumps(rows[-1]), flush=True)
    return rows


def machine() -> dict[str, object]:
    """Where it ran: host, CPU model and count, load, versions."""
    import keras
    import mlflow

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }


def markdown(report: dict) -> str:
    """The report as a Markdown table with its date and machine."""
    head = report["machine"]
    lines = [
        f"# Serving benchmark: {report['model']}, {head['keras_backend']}",
        "",
        f"Measured {head['date']} on this project's {head['cpu_count']}-core CPU machine "
        f"({head['cpu']}; load average {head['load_average_before']:.1f} before it began, "
        f"the machine is shared), mlflow {head['mlflow']}, keras {head['keras']}; "
        f"{report['seconds']:g} s per row after 5 warm-up requests.",
        "",
        "| server | payload | images/request | clients | requests/s | images/s | p50 ms "
        "| p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['server']} | {r['payload']} | {r['images']} | {r['clients']} "
            f"| {r['rps']:.1f} | {r['rps'] * r['images']:.0f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} |"
        )
    lines += [
        "",
        "ours: `fmnist serve` (front, MLflow's scoring server, the pyfunc); plain: "
        "`mlflow models serve` of the Keras flavour. png: base64 PNGs (what users send); "
        "floats: (n, 28, 28, 1) normalised floats (the only payload plain takes).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print, write bench/results/serving-cpu<N>.{json,md}."""
    parser = argparse.ArgumentParser(prog="python -m fmnist.bench.serve", description=__doc__)
    parser.add_argument("--model-name", default="vgg", help="the chapter's model to serve")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", default=None, help="file stem (default: serving-cpu<N>)")
    args = parser.parse_args(argv)
    head = machine()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        rows = measure(args, Path(tmp))
    report = {"model": args.model_name, "seconds": args.seconds, "machine": head, "rows": rows}
    stem = RESULTS / (args.out or f"serving-cpu{head['cpu_count']}")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
