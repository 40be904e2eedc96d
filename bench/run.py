"""The benchmark: each model through the project's trainer and through plain model.fit.

Every (model, code path) pair runs in a fresh process (bench/worker.py), one after the other,
so that memory starts clean, peak RSS is per model, and no two measurements share the
machine. This process only orchestrates and writes the report: it imports neither keras nor
a backend.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fmnist.bench.settings import K80_SECONDS_PER_EPOCH, MODELS, PROFILES, resolve

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DATA_CANDIDATES = (Path("/usr/share/datasets/fashion-mnist"), Path(".data"))
RUNNERS = ("ours", "plain")


def find_data(given: Path | None) -> Path:
    """The folder with the four .gz files: --data, else Debian's, else .data/."""
    candidates = [given] if given else list(DATA_CANDIDATES)
    for folder in candidates:
        if folder and (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
        if folder and (folder / "train-images-idx3-ubyte").is_file():
            return folder
    raise SystemExit(
        f"no Fashion-MNIST files in {', '.join(map(str, candidates))}: pass --data DIR "
        "(a folder holding the four .gz files)"
    )


def run_worker(
    model: str,
    runner: str,
    settings: dict[str, Any],
    data: Path,
    cache: Path,
    timeout_s: float | None,
) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "fmnist.bench.worker",
            f"--model={model}",
            f"--runner={runner}",
            f"--settings={json.dumps(settings)}",
            f"--data={data}",
            f"--cache={cache}",
            f"--out={out}",
        ]
        root = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        proc = subprocess.run(cmd, env=env, timeout=timeout_s, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"{model}/{runner} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        return json.loads(out.read_text())


def summarise(name: str, ours: dict[str, Any], plain: dict[str, Any] | None) -> dict[str, Any]:
    """One model's row: our figures, the baseline's, their ratios, and the K80's."""
    row: dict[str, Any] = {"model": name, "ours": ours, "plain": plain}
    if plain:
        # Above 1: our trainer is faster than plain model.fit.
        row["ours_vs_plain_steady"] = ours["steady_samples_per_s"] / plain["steady_samples_per_s"]
        row["ours_vs_plain_wall"] = ours["samples_per_s"] / plain["samples_per_s"]
        row["ours_vs_plain_cpu"] = ours["samples_per_cpu_s"] / plain["samples_per_cpu_s"]
    if name in K80_SECONDS_PER_EPOCH:
        k80_s, k80_images = K80_SECONDS_PER_EPOCH[name]
        k80_rate = k80_images / k80_s
        row["k80_samples_per_s"] = k80_rate
        # Above 1: faster than the chapter's K80, per training image (epochs of other sizes
        # are compared by throughput, validation included in both).
        row["vs_k80"] = ours["steady_samples_per_s"] / k80_rate
    return row


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device: str, cpu_count: int | None) -> str:
    """cpu2 for a 2-core CPU, gpu-nvidia-h200 for a card."""
    if device.startswith("cpu"):
        return f"cpu{cpu_count or ''}"
    return _slug(device)


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _load(head: dict[str, Any]) -> str:
    load = head.get("load_avg_1min")
    return f"{load[0]} at the start, {load[1]} at the end" if load else "not recorded"


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table plus its context."""
    head = report["context"]
    lines = [
        f"# Benchmark: {head['device']}, {head['backend']}, profile {head['profile']}",
        "",
        f"Measured {head['date']} on {head['host']} ({head['cpu_count']} CPU cores), "
        f"keras {head['keras_version']}, precision {head['precision']}, "
        f"batch {head['batch_size']}, steps_per_execution {head['steps_per_execution']}, "
        f"jit_compile {head['jit_compile']}; {head['epochs']} epochs on "
        f"{head['train_subset'] or 60_000} images (+{head['n_augmented']:,} augmented for "
        f"vgg_augmented). Benchmark wall time {head['wall_s']:.0f} s; 1-minute load average "
        f"{_load(head)} (other work on the machine slows the wall-clock figures far more "
        "than the per-CPU-second ones).",
        "",
        "| model | train images | first epoch s | steady s/epoch | compile s | samples/s | "
        "TFLOP/s | peak RSS MB | training s | test acc | plain: steady s/epoch | "
        "ours/plain steady | ours/plain CPU | vs K80 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["models"]:
        o, p = row["ours"], row["plain"] or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    row["model"],
                    _f(o["train_samples"]),
                    _f(o["first_epoch_s"]),
                    _f(o["steady_epoch_s"]),
                    _f(o["compile_s"]),
                    _f(o["steady_samples_per_s"], 0),
                    _f(o["steady_tflops"], 3),
                    _f(o["peak_rss_mb"], 0),
                    _f(o["fit_s"], 1),
                    _f(o["test_accuracy"], 4),
                    _f(p.get("steady_epoch_s")),
                    _f(row.get("ours_vs_plain_steady"), 3),
                    _f(row.get("ours_vs_plain_cpu"), 3),
                    _f(row.get("vs_k80"), 2),
                ]
            )
            + " |"
        )
    totals = report["totals"]
    lines += [
        "",
        f"Training seconds for the four (fit only): ours {totals['ours_fit_s']:.1f} s, "
        f"plain model.fit {_f(totals.get('plain_fit_s'), 1)} s. "
        f"Samples per CPU-second, ours / plain, over all four: "
        f"{_f(totals.get('ours_vs_plain_cpu'), 3)}.",
        "",
        "steady: median epoch after the first; compile: first minus steady; samples/s: "
        "training images per steady second (validation pass included in the time); TFLOP/s: "
        "analytic count (bench/flops.py: 2 FLOPs per multiply-accumulate, training 3x "
        "forward, validation 1x) per steady epoch; ours/plain: steady samples/s and samples "
        "per process CPU-second of the project's trainer over plain model.fit at batch 32 "
        "(above 1: ours faster); vs K80: steady samples/s over the chapter's Tesla K80 "
        "(7 / 9 / 14 s per epoch of 45,000 / 45,000 / 67,500 images; none given for "
        "pool_dropout).",
    ]
    return "\n".join(lines) + "\n"


def _per_cpu_s(results: list[dict[str, Any]]) -> float:
    """Training samples per process CPU-second over several measurements."""
    samples = sum(r["train_samples"] * r["epochs"] for r in results)
    return samples / sum(r["fit_cpu_s"] for r in results)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run every model through both code paths; return the report."""
    profile = "quick" if args.quick else args.profile
    settings = resolve(
        args.profile,
        quick=args.quick,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        n_augmented=args.n_augmented,
        epochs=args.epochs,
        precision=args.precision,
    )
    baseline = {**settings, "epochs": args.baseline_epochs or settings["epochs"]}
    data = find_data(args.data)
    # Decompress and verify once here (stdlib only), not in every worker.
    from fmnist.stages.download import fetch_all

    fetch_all([str(data)], args.cache)
    # Wall-clock figures are only as good as the machine is quiet: say how busy it was.
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows, results = [], []
    for name in args.models:
        measured: dict[str, dict[str, Any]] = {}
        for runner in args.runners:
            print(f"bench: {name} / {runner} ...", file=sys.stderr, flush=True)
            cfg = settings if runner == "ours" else baseline
            measured[runner] = run_worker(name, runner, cfg, data, args.cache, args.timeout)
            m = measured[runner]
            print(
                f"bench: {name} / {runner}: first {m['first_epoch_s']:.2f} s, steady "
                f"{m['steady_epoch_s']:.2f} s/epoch, test acc {m['test_accuracy']:.4f}",
                file=sys.stderr,
                flush=True,
            )
            results.append(m)
        rows.append(summarise(name, measured["ours"], measured.get("plain")))
    wall = time.perf_counter() - started
    first = results[0]
    ours = [r["ours"] for r in rows]
    plains = [r["plain"] for r in rows if r["plain"]]
    totals: dict[str, Any] = {"ours_fit_s": sum(o["fit_s"] for o in ours)}
    if plains and len(plains) == len(ours):
        totals["plain_fit_s"] = sum(p["fit_s"] for p in plains)
        totals["ours_vs_plain_cpu"] = _per_cpu_s(ours) / _per_cpu_s(plains)
    context = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": first["cpu_count"],
        "device": first["device"],
        "backend": first["backend"],
        "keras_version": first["keras_version"],
        "profile": profile,
        "wall_s": wall,
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **{k: settings[k] for k in settings if k not in ("augment", "models")},
        "baseline_epochs": baseline["epochs"],
    }
    return {"context": context, "models": rows, "totals": totals}


def write_report(report: dict[str, Any], out_dir: Path, tag: str | None = None) -> Path:
    """bench/results/<device>-<backend>-<profile>[-tag].json and .md; returns the JSON path."""
    c = report["context"]
    stem = "-".join(
        filter(None, [device_slug(c["device"], c["cpu_count"]), c["backend"], c["profile"], tag])
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(to_markdown(report))
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of `python -m fmnist.bench`."""
    p = argparse.ArgumentParser(
        prog="python -m fmnist.bench",
        description="Time the project's trainer against plain model.fit, one process per "
        "model; KERAS_BACKEND chooses the backend.",
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="book")
    p.add_argument("--quick", action="store_true", help="CPU mode: a subset, 2 epochs")
    p.add_argument("--data", type=Path, help="folder with the four .gz files")
    p.add_argument("--cache", type=Path, default=Path("data/fashion-mnist"))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--test-subset", type=int)
    p.add_argument("--n-augmented", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    p.add_argument(
        "--baseline-epochs",
        type=int,
        help="epochs of the plain baseline (default: as ours); 3 suffice for its s/epoch",
    )
    p.add_argument("--timeout", type=float, help="seconds allowed per process")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", help="suffix of the result files' names")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON and Markdown."""
    args = parse_args(argv)
    if "ours" not in args.runners:
        raise SystemExit("--runners must include ours")
    report = benchmark(args)
    path = write_report(report, args.out, args.tag)
    print(path.with_suffix(".md").read_text())
    print(f"bench: wrote {path} and {path.with_suffix('.md').name}", file=sys.stderr)
    return 0
