"""What `workbench up` does, decided before anything starts: which services, where each
runs, in what order, and what becomes of one that already runs (plan); then done (execute),
the command only rendering what happens through a Reporter.

The policy: engines start first, in a wave of their own, and the apps once those are
healthy (an app reads its engine's port when it starts), an app not at all when its engine
failed. Engines go to a Ray cluster when one is given (--cluster, else $RAY_ADDRESS) and
apps always run here. A service already running is kept; an engine on the asked cluster is
rescaled when another replica count is asked; one running elsewhere is refused (`down` first).
"""

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Protocol

from workbench.errors import WorkbenchError
from workbench.project import Project
from workbench.serving import launch, net, services
from workbench.serving.state import Kind, Service

CLUSTER_VARIABLE = "RAY_ADDRESS"


class Action(StrEnum):
    START = "start"  # here, under a supervisor
    DEPLOY = "deploy"  # onto the cluster, as a Ray Serve application
    RESCALE = "rescale"  # on the cluster already: to the replicas asked
    KEEP = "keep"  # running already, as asked
    REFUSE = "refuse"  # running elsewhere


@dataclass(frozen=True)
class Step:
    name: str
    kind: Kind
    action: Action
    engine: str | None = None  # the engine an app fronts: the app waits for it
    url: str | None = None  # KEEP: where it runs
    why: str | None = None  # REFUSE: what to do instead
    replicas: int | None = None  # DEPLOY, RESCALE
    gpus_per_replica: float | None = None  # DEPLOY, RESCALE


@dataclass(frozen=True)
class Plan:
    cluster: str | None  # where the engines go; None: this server
    waves: tuple[tuple[Step, ...], ...]  # each healthy before the next starts

    @property
    def steps(self) -> list[Step]:
        return [step for wave in self.waves for step in wave]

    def to_json(self) -> dict:
        return {"cluster": self.cluster, "steps": [asdict(step) for step in self.steps]}


def cluster_address(given: str | None) -> str | None:
    """--cluster, else $RAY_ADDRESS, else None (this server)."""
    return given or os.environ.get(CLUSTER_VARIABLE) or None


def wanted(project: Project, names: list[str]) -> list[str]:
    """The services to start, engines first: all of them, or those named plus the engines
    the named apps front."""
    if not names:
        names = sorted(project.engines) + sorted(project.apps)
    if not names:
        raise WorkbenchError(
            "nothing to start in workbench.toml ([engines.NAME] with env, model, port; "
            "[apps.NAME] with env, file, port)"
        )
    for name in names:
        project.service(name)
    fronted = [project.apps[n].engine for n in names if n in project.apps]
    found = list(dict.fromkeys(names + [e for e in fronted if e]))
    return sorted(found, key=lambda n: n not in project.engines)


def plan(
    project: Project,
    names: list[str],
    *,
    cluster: str | None = None,
    replicas: int | None = None,
    gpus_per_replica: float | None = None,
    current: Mapping[str, Service | None] | None = None,
) -> Plan:
    """What `up NAME...` does; current: the services running now (default: as `ps` finds
    them)."""
    names = wanted(project, names)
    engine_names = [n for n in names if n in project.engines]
    address = cluster_address(cluster) if engine_names else None
    if not address and (replicas is not None or gpus_per_replica is not None):
        raise WorkbenchError(
            f"--replicas and --gpus-per-replica need --cluster (or {CLUSTER_VARIABLE})"
        )
    if current is None:
        current = {name: services.running(project, name) for name in names}
    waves = [
        tuple(_step(project, n, address, replicas, gpus_per_replica, current.get(n)) for n in group)
        for group in (engine_names, [n for n in names if n in project.apps])
        if group
    ]
    return Plan(address, tuple(waves))


def _step(
    project: Project,
    name: str,
    cluster: str | None,
    replicas: int | None,
    gpus_per_replica: float | None,
    now: Service | None,
) -> Step:
    kind = Kind.ENGINE if name in project.engines else Kind.APP
    on_cluster = cluster is not None and kind == Kind.ENGINE
    if on_cluster and now is not None and now.cluster != cluster:
        where = f"on {now.cluster}" if now.cluster else "on this server"
        why = f"{name} runs {where}: `workbench down {name}` first"
        return Step(name, kind, Action.REFUSE, why=why)
    rescale = on_cluster and now is not None and replicas not in (None, now.replicas)
    if now is not None and not rescale:
        return Step(name, kind, Action.KEEP, url=now.url)
    if not on_cluster:
        return Step(name, kind, Action.START, engine=getattr(project.service(name), "engine", None))
    if gpus_per_replica is None and rescale:  # as it was deployed
        gpus_per_replica = services.deployment(project, name).gpus_per_replica
    if gpus_per_replica is None:  # the env's GPUs
        env = project.env(project.engine(name).env)
        gpus_per_replica = float(env.gpu_count or len(env.gpus or ()))
    action = Action.RESCALE if rescale else Action.DEPLOY
    return Step(name, kind, action, replicas=replicas or 1, gpus_per_replica=gpus_per_replica)


class Reporter(Protocol):
    """How the command renders what execute does."""

    def note(self, name: str, message: str) -> None: ...  # a fact on the way
    def healthy(self, name: str, url: str, detail: str) -> None: ...
    def failed(self, name: str, error: WorkbenchError) -> None: ...
    def waiting(self, why: str) -> None: ...  # for GPUs

    def progress(self, name: str) -> AbstractContextManager[Callable[[str], None]]: ...


@dataclass(frozen=True)
class Options:
    host: str
    auth: str | None  # the apps' login
    timeout: float  # seconds for each service's health
    wait: float | None  # seconds to wait for GPUs held elsewhere (--wait)


def execute(project: Project, plan: Plan, options: Options, report: Reporter) -> int:
    """Carry the plan out, wave after wave; returns the exit code (the worst failure's).
    Where one service was asked for, its failure raises instead."""
    code, failed = 0, set()
    single = len(plan.steps) == 1
    taken = {s.port for s in services.listed(project)}
    for wave in plan.waves:
        started = []
        for step in wave:
            try:
                if step.action == Action.KEEP:
                    report.note(step.name, f"already running at {step.url}")
                elif step.action == Action.REFUSE:
                    raise WorkbenchError(step.why)
                elif step.engine in failed:
                    why = f"{step.name}: not started, its engine {step.engine} failed"
                    raise WorkbenchError(why)
                elif step.action in (Action.DEPLOY, Action.RESCALE):
                    _deploy(project, step, plan.cluster, options, report)
                else:
                    taken.add(_start(project, step, options, taken, report))
                    started.append(step.name)
            except WorkbenchError as exc:
                if single:
                    raise
                report.failed(step.name, exc)
                code, failed = max(code, exc.exit_code), failed | {step.name}
        for name in started:
            try:
                service = services.wait_healthy(project, name, options.timeout)
                report.healthy(name, service.url, "")
            except WorkbenchError as exc:
                report.failed(name, exc)
                code, failed = max(code, exc.exit_code), failed | {name}
    return code


def _start(
    project: Project, step: Step, options: Options, taken: set[int], report: Reporter
) -> int:
    """Start step's service here; returns its port (the manifest's, or the next free)."""
    entry = project.service(step.name)
    port = net.pick_port(entry.port, options.host, taken)
    if port != entry.port:
        report.note(step.name, f"port {entry.port} is in use, using {port}")
    services.start_leased(
        project,
        step.name,
        step.kind,
        entry.env,
        lambda gpus: launch.here(project, step.name, options.host, port, options.auth, gpus),
        options.wait,
        report.waiting,
    )
    return port


def _deploy(project: Project, step: Step, cluster: str, options: Options, report: Reporter) -> None:
    """An engine onto the Ray cluster as a Serve application (blocks until it is healthy)."""
    from workbench.cluster import serving

    entry = project.engine(step.name)
    with report.progress(step.name) as update:
        record = serving.deploy(
            project, entry, cluster, step.replicas, step.gpus_per_replica, options.host,
            options.timeout, update,
        )  # fmt: skip
    detail = f"{record.replicas} replica(s) on {cluster}, up in {record.up_seconds:g} s"
    report.healthy(step.name, record.url, detail)
