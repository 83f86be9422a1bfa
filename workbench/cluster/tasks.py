"""What runs on a cluster node for one run of a sweep (a Ray task): the project at the
driver's commit (unpacked once per node and commit from the `git archive` the driver
shares), its env built there from the committed lock when missing, then `workbench run`
as a subprocess with the GPUs Ray assigned (WORKBENCH_GPUS_ASSIGNED beats any pin in the
manifest), and the run's folder (record, output notebook, what the run wrote there) sent
back to the driver.

Imported by Ray workers, which run the cluster's Python, where workbench is installed.
"""

import contextlib
import fcntl
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from workbench import results
from workbench.errors import WorkbenchError
from workbench.runtime import contract
from workbench.subprocesses import interruptible_child

MARKER = ".workbench-commit"


class Collector:
    """A small actor on the driver's node: tasks say when and where they start, and an
    interrupted task hands in what its run left (its return value is lost to the cancel)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.delivered: dict[int, dict] = {}

    def started(self, event: dict) -> None:
        self.events.append(event)

    def deliver(self, result: dict) -> None:
        self.delivered[result["key"]] = result

    def drain(self) -> tuple[list[dict], dict[int, dict]]:
        events, delivered = self.events, self.delivered
        self.events, self.delivered = [], {}
        return events, delivered


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def materialize(cache: Path, name: str, commit: str, archive: bytes) -> Path:
    """The project at commit, unpacked under cache once per node (concurrent tasks wait)."""
    cache.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "project"
    target = cache / f"{slug}-{commit[:12]}"
    with _locked(cache / f".{target.name}.lock"):
        if not (target / MARKER).is_file():
            staging = cache / f".{target.name}.{secrets.token_hex(3)}"
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(staging, filter="data")
            (staging / MARKER).write_text(commit + "\n")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target


def ensure_env(root: Path, env: str) -> None:
    """Build env from its committed lock unless this node has it already."""
    from workbench import project as projects
    from workbench.envs import builds

    with _locked(root / f".workbench-env-{env}.lock"):
        if builds.active_prefix(projects.load(root), env) is not None:
            return
        proc = subprocess.run(
            [sys.executable, "-m", "workbench", "env", "create", env, "--locked"],
            cwd=root,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            said = [line for line in proc.stderr.splitlines() if line.strip()]
            raise RuntimeError(
                f"building env {env} on this node failed: {said[-1] if said else ''}"
            )


def _command(spec: dict) -> list[str]:
    cmd = [sys.executable, "-m", "workbench", "run", spec["notebook"], "--json"]
    for name, value in spec["parameters"].items():
        cmd += ["-p", name, str(value)]
    for option in ("preset", "env", "timeout"):
        if spec.get(option) is not None:
            cmd += [f"--{option}", str(spec[option])]
    return cmd


def _collect(root: Path, stdout: str) -> tuple[dict | None, dict[str, bytes], str | None]:
    """The run's record, the files of its folder, or why there is none."""
    try:
        record = results.data_of(stdout, "workbench run") or {}
    except WorkbenchError as exc:
        return None, {}, exc.message
    folder = root / "runs" / str(record.get("id"))
    files = {}
    if record.get("id") and folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file():
                files[str(path.relative_to(folder))] = path.read_bytes()
        shutil.rmtree(folder, ignore_errors=True)  # the driver keeps it now
    return record, files, None


def run_on_node(archive: bytes, spec: dict, collector) -> dict:
    """One run of a sweep on this node; returns what the driver writes into its runs/."""
    import ray

    context = ray.get_runtime_context()
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "") if spec["gpus_per_run"] else ""
    where = {
        "key": spec["key"],
        "node": context.get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "devices": [d for d in devices.split(",") if d],
    }
    collector.started.remote({**where, "at": time.time()})
    cache = contract.CLUSTER_CACHE.get() or Path.home() / ".cache/workbench/cluster"
    root = materialize(cache, spec["project"], spec["commit"], archive)
    ensure_env(root, spec["env"])
    proc = subprocess.Popen(
        _command(spec),
        cwd=root,
        # Ray's assignment wins over a manifest pin
        env={**os.environ, contract.GPUS_ASSIGNED.name: devices},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible_child,
    )
    try:
        stdout, stderr = proc.communicate()
    except KeyboardInterrupt:  # the sweep was stopped (ray.cancel): the run records that
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        record, files, error = _collect(root, stdout)
        result = {**where, "code": proc.returncode, "record": record, "files": files}
        ray.get(collector.deliver.remote({**result, "error": error, "stderr": stderr[-2000:]}))
        raise
    record, files, error = _collect(root, stdout)
    return {
        **where,
        "code": proc.returncode,
        "record": record,
        "files": files,
        "error": error,
        "stderr": stderr[-2000:],
    }
