"""An engine's configuration, checked before a core starts: the model folder and its task,
the API keys, the devices the workers spread over, and what the info metric says about the
environment.

API keys (workbench.runtime.apikeys): WORKBENCH_API_KEYS, removed from the environment once
read so no core inherits it, and --api-keys-file. Keys never reach argv, logs or metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from workbench.runtime import LOOPBACK_HOSTS, apikeys, contract, models
from workbench.runtime.engine.settings import HANDLER, HANDLER_FORM, SETTINGS
from workbench.runtime.engine.workers import Settings


def handler(spec: str, task: str, root: Path) -> str:
    """The handler FILE.py:Class with its file made absolute (from the project root);
    ValueError when the file is missing or a task is set too."""
    if task != "auto":
        raise ValueError(f"--handler {spec} and --task {task}: set one (a handler is the model)")
    path, _, name = spec.rpartition(":")
    file = (root / path).resolve()
    if not file.is_file():
        raise ValueError(f"--handler {spec}: {file} not found (expected {HANDLER_FORM[1]})")
    return f"{file}:{name}"


def devices(requested: str) -> list[str | None]:
    """One entry per device the workers spread over: GPUs named by CUDA_VISIBLE_DEVICES
    (device auto or cuda), else the CPU (None)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    gpus = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if requested == "cpu" or not gpus:
        if requested == "cuda":
            raise ValueError("--device cuda but CUDA_VISIBLE_DEVICES names no GPU")
        return [None]
    return gpus


def environment_info(args: argparse.Namespace) -> dict[str, str]:
    """env, lock hash, Python and package count, for the info metric: from the env's build
    record (workbench-env.json in sys.prefix), overridden by WORKBENCH_ENV/WORKBENCH_LOCK_HASH
    (an image sets those)."""
    record = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((Path(sys.prefix) / "workbench-env.json").read_text())
    packages = record.get("packages")
    if packages is None:
        packages = _count_packages()
    return {
        "env": contract.ENV.get() or record.get("env") or "",
        "lock": contract.LOCK_HASH.get() or record.get("lock_hash") or "",
        "python": ".".join(map(str, sys.version_info[:3])),
        "packages": str(packages),
        "model": args.model,
        "task": args.task,
        "workers": str(args.workers),
    }


_PACKAGES: list[int] = []


def _count_packages() -> int:
    if not _PACKAGES:
        from importlib import metadata

        _PACKAGES.append(len({d.metadata["Name"] for d in metadata.distributions()}))
    return _PACKAGES[0]


def configure(args: argparse.Namespace) -> tuple[Settings, list[str]]:
    """Everything that can be wrong with the command line, checked before a core starts."""
    root = Path(args.root or os.getcwd()).resolve()
    folder = models.resolve(args.model, root)
    args.model = str(folder)
    if args.handler:
        args.handler = handler(args.handler, args.task, root)
        args.task = HANDLER
    elif args.task == "auto":
        args.task = models.detect_task(folder)
    keys_file = Path(args.api_keys_file) if args.api_keys_file else None
    keys = apikeys.read(keys_file, remove=True)
    if args.host not in LOOPBACK_HOSTS and not keys:
        raise ValueError(
            f"--host {args.host} would expose the engine without API keys; set "
            f"{contract.API_KEYS.name} or --api-keys-file, or reach it over `workbench tunnel`"
        )
    spread = devices(args.device)
    args.workers = args.workers or len(spread)
    settings = Settings(
        name=args.name,
        model=args.model,
        devices=spread,
        log_level=args.log_level.upper(),
        **{setting.name: getattr(args, setting.name) for setting in SETTINGS},
    )
    return settings, keys
