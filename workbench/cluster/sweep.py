"""`workbench sweep … --cluster ADDRESS`: every run a Ray task (workbench.cluster.tasks)
with num_gpus = --gpus-per-run, on whichever node Ray picks.

The project reaches the nodes at the driver's commit (a `git archive`, shared through
Ray's object store), so tracked changes must be committed first, and so must the env's
lock (nodes build the env from it). Records, output notebooks and metrics come back into
the driver's runs/, with the node and GPU ids. A run whose node or worker is lost is
submitted again (up to MAX_ATTEMPTS, after RETRY_DELAY_S times the attempts lost so far:
Ray takes a moment to mark a lost node dead, and a retry sent sooner may go to it and be
lost again), and its record lists the lost attempts; a notebook that fails is a result,
never retried. Ctrl-C cancels the runs: those in hand record that they were interrupted.
"""

import contextlib
import tempfile
import time
from pathlib import Path

from workbench.cluster import loopback, require_ray, stdout_to_stderr
from workbench.envs import kernels
from workbench.errors import WorkbenchError
from workbench.notebooks.parameters import read
from workbench.notebooks.records import RunRecord
from workbench.notebooks.sweep import Outcome, Progress, SweepFile
from workbench.project import Project
from workbench.subprocesses import run as run_command

MAX_ATTEMPTS = 3
RETRY_DELAY_S = 2.0  # after a few missed health checks (every 0.5 s) a lost node is noticed
DELIVERY_WAIT_S = 120.0


def env_name(project: Project, notebook: Path, env: str | None) -> str:
    """The env the notebook runs in (it need not be built here: the nodes build it)."""
    if env:
        project.env(env)
        return env
    kernel = (read(notebook).get("metadata", {}).get("kernelspec") or {}).get("name", "")
    found = kernels.env_of(project, kernel) if kernel else None
    if found is None:
        raise WorkbenchError(
            f"{notebook}: kernel '{kernel}' is not a project env kernel; pass --env"
        )
    return found


def _git(project: Project, *args: str) -> str:
    return run_command(["git", *args], what=f"git {args[0]}", cwd=project.root, timeout=120).stdout


def snapshot(project: Project, paths: list[Path]) -> tuple[str, bytes]:
    """(commit, tar of it): what the nodes run. Uncommitted changes would be lost on
    them, so they are refused, as are needed files git does not track."""
    try:
        commit = _git(project, "rev-parse", "HEAD").strip()
    except WorkbenchError:
        raise WorkbenchError(
            f"{project.root} is not a git checkout with a commit: a cluster runs the project "
            "at a commit (git init, git commit)"
        ) from None
    if _git(project, "status", "--porcelain", "--untracked-files=no").strip():
        raise WorkbenchError(
            f"the cluster would run commit {commit[:12]}, but tracked files have uncommitted "
            "changes: commit them first (git status)"
        )
    for path in paths:
        relative = path.resolve().relative_to(project.root.resolve())
        if not _git(project, "ls-files", "--", str(relative)).strip():
            raise WorkbenchError(
                f"{relative} is not committed: the nodes need it (git add, commit)"
            )
    with tempfile.TemporaryDirectory(prefix="wb-archive-") as tmp:
        tar = Path(tmp) / "project.tar"
        _git(project, "archive", "--format=tar", "-o", str(tar), commit)
        return commit, tar.read_bytes()


def run(
    project: Project,
    sweep: SweepFile,
    combos: list[dict],
    timeout: float | None,
    on_event: Progress,
) -> list[Outcome]:
    require_ray()
    notebook = project.root / sweep.notebook
    env = env_name(project, notebook, sweep.env)
    entry = project.env(env)
    commit, archive = snapshot(project, [notebook, entry.spec_path, entry.lock_path])
    loopback.prepare_driver(sweep.cluster)
    with stdout_to_stderr():
        return _run(project, sweep, combos, timeout, on_event, env, commit, archive)


def _run(
    project: Project,
    sweep: SweepFile,
    combos: list[dict],
    timeout: float | None,
    on_event: Progress,
    env: str,
    commit: str,
    archive: bytes,
) -> list[Outcome]:
    import ray
    from ray.exceptions import GetTimeoutError, RayError, RayTaskError, TaskCancelledError

    from workbench.cluster.tasks import Collector, run_on_node

    ray.init(address=sweep.cluster, log_to_driver=False, logging_level="ERROR")
    try:
        here = ray.get_runtime_context().get_node_id()
        collector = (
            ray.remote(Collector)
            .options(
                num_cpus=0,
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    here, soft=False
                ),
            )
            .remote()
        )
        shared = ray.put(archive)
        task = ray.remote(
            num_gpus=sweep.gpus_per_run, num_cpus=1, max_retries=0, retry_exceptions=False
        )(run_on_node)
        outcomes = [Outcome(i, combo) for i, combo in enumerate(combos)]
        attempts: dict[int, list[dict]] = {i: [] for i in range(len(combos))}
        where: dict[int, dict] = {}
        sweep.runs = [""] * len(combos)
        sweep.save(project)

        def submit(index: int):
            spec = {
                "key": index,
                "project": project.name,
                "commit": commit,
                "notebook": sweep.notebook,
                "parameters": combos[index],
                "preset": sweep.preset,
                "env": env,
                "timeout": timeout,
                "gpus_per_run": sweep.gpus_per_run,
            }
            return task.options(name=f"{sweep.id}#{index}").remote(shared, spec, collector)

        pending = {submit(i): i for i in range(len(combos))}
        retry_at: dict[int, float] = {}  # lost runs, and when to submit them again
        announced: set[int] = set()

        def drain() -> dict[int, dict]:
            events, delivered = ray.get(collector.drain.remote())
            for event in events:
                where[event["key"]] = event
                if event["key"] not in announced:
                    announced.add(event["key"])
                    on_event("started", outcomes[event["key"]])
            return delivered

        try:
            while pending or retry_at:
                for index in [i for i, at in retry_at.items() if at <= time.monotonic()]:
                    del retry_at[index]
                    pending[submit(index)] = index
                done = []
                if pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                else:
                    time.sleep(0.2)
                drain()
                for ref in done:
                    index = pending.pop(ref)
                    outcome = outcomes[index]
                    try:
                        result = ray.get(ref)
                    except RayTaskError as exc:  # the task itself raised: a result, not a loss
                        outcome.error = (
                            str(exc.cause if exc.cause else exc).strip().splitlines()[-1]
                        )
                        outcome.code = 1
                        on_event("done", outcome)
                        continue
                    except RayError as exc:  # a node or worker lost: try again
                        lost = where.pop(index, {})
                        attempts[index].append(
                            {
                                "node": lost.get("node"),
                                "ip": lost.get("ip"),
                                "error": type(exc).__name__,
                                "at": time.time(),
                            }
                        )
                        if len(attempts[index]) < MAX_ATTEMPTS:
                            delay = RETRY_DELAY_S * len(attempts[index])
                            retry_at[index] = time.monotonic() + delay
                            continue
                        outcome.error = f"lost {MAX_ATTEMPTS} times ({type(exc).__name__})"
                        outcome.code = 1
                        on_event("done", outcome)
                        continue
                    _land(project, sweep, commit, outcome, result, attempts[index])
                    on_event("done", outcome)
        except KeyboardInterrupt:
            sweep.status = "interrupted"
            started = [i for i in pending.values() if i in where]
            for ref in pending:
                ray.cancel(ref)
            deadline = time.monotonic() + DELIVERY_WAIT_S
            landed: set[int] = set()
            while time.monotonic() < deadline and not set(started) <= landed:
                for index, result in drain().items():
                    _land(project, sweep, commit, outcomes[index], result, attempts[index])
                    landed.add(index)
                time.sleep(0.5)
            for ref in pending:
                with contextlib.suppress(RayError, TaskCancelledError, GetTimeoutError):
                    ray.get(ref, timeout=5)
        return outcomes
    finally:
        ray.shutdown()


def _land(
    project: Project,
    sweep: SweepFile,
    commit: str,
    outcome: Outcome,
    result: dict,
    attempts: list[dict],
) -> None:
    """Write a run's files from its node into runs/ and complete its record."""
    outcome.code = result.get("code", 1)
    record_data = result.get("record")
    if not record_data:
        outcome.error = result.get("error") or "the run left no record"
        return
    folder = project.runs_dir / record_data["id"]
    for relative, data in result.get("files", {}).items():
        target = folder / relative
        if not target.resolve().is_relative_to(folder.resolve()):
            continue  # a file name from a node never writes outside the run's folder
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    record = RunRecord.read(folder / "record.json") or RunRecord.from_json(record_data)
    record.sweep = sweep.id
    record.node = f"{result['ip']}/{result['node'][:12]}"
    record.gpus = result.get("devices") or record.gpus
    record.attempts = attempts
    record.git_commit, record.git_dirty = commit, False
    record.save(project)
    outcome.record = record
    outcome.seconds = record.seconds or 0.0
    sweep.runs[outcome.index] = record.id
    sweep.save(project)
