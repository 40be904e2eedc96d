"""`python -m fmnist.stack up|down|status` (make stack-up | stack-down | stack-status)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fmnist.stack import StackError
from fmnist.stack.core import EXIT_NOT_RUNNING, down, status, up


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m fmnist.stack up|down|status`."""
    parser = argparse.ArgumentParser(
        prog="python -m fmnist.stack", description="The local PostgreSQL/Prefect/MLflow stack."
    )
    parser.add_argument("command", choices=("up", "down", "status", "worker-settings"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="data, logs, secrets, supervisord (default: FMNIST_STACK_DIR or .stack/)",
    )
    parser.add_argument(
        "--no-deployments",
        action="store_true",
        help="up: do not run `python -m fmnist.stack.deployments apply`",
    )
    worker = parser.add_argument_group("worker-settings (a worker on another machine)")
    worker.add_argument("--name", help="the worker's name (its MLflow user: worker-NAME)")
    worker.add_argument("--pool", default="gpu", help="its work pool (default: gpu)")
    worker.add_argument(
        "--experiment",
        action="append",
        default=[],
        help="an experiment it may write to besides the profiles' (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "worker-settings":
            from fmnist.stack.core import Stack
            from fmnist.stack.remote_worker import keep_private, worker_settings

            if not args.name:
                parser.error("worker-settings needs --name")
            keep_private(sys.stdout.fileno())  # before a credential is written to it
            sys.stdout.write(
                worker_settings(Stack(args.state_dir), args.name, args.pool, args.experiment)
            )
            return 0
        if args.command == "up":
            up(args.state_dir, deployments=not args.no_deployments)
        elif args.command == "down":
            down(args.state_dir)
            print("stack stopped")
        else:
            return 0 if status(args.state_dir) else EXIT_NOT_RUNNING
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        if args.command == "up":
            print(
                "stack: what did start still runs; see `status`, or stop it with `down`",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
