"""What the supervisor of a service and the commands that read it (`ps`, `down`, `tunnel`)
exchange, in .workbench/services/NAME/: service.json (what to run; 0600, it may hold the app's
login) and state.json (how it goes; rewritten by the supervisor on every change). An engine
deployed on a Ray cluster has only service.json, naming the cluster (no supervisor here).

Light on purpose: the supervisor and the laptop side of `tunnel` import this, not the envs
side. Both files carry a version; readers ignore keys they do not know.
"""

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from workbench.jsonfiles import StateFile


class Kind(StrEnum):
    APP = "app"
    ENGINE = "engine"
    LAB = "lab"


class ServiceStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"


class Health(StrEnum):
    HEALTHY = "healthy"
    STARTING = "starting"  # up, still loading (HTTP 503)
    UNHEALTHY = "unhealthy"
    DOWN = "down"  # nothing answers


@dataclass
class ServiceSpec(StateFile):
    """service.json: how the supervisor starts the service."""

    name: str
    kind: str
    argv: list[str]
    cwd: str
    host: str
    port: int
    url: str
    log: str
    env_name: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the supervisor's environment
    standby: bool = False  # keep a warm spare for fast restarts (apps)
    # An engine deployed on a Ray cluster (workbench.cluster.serving): no supervisor here,
    # Serve's proxy at port, the engine's routes under route.
    cluster: str | None = None  # the Ray address
    replicas: int | None = None
    gpus_per_replica: float = 0
    route: str = ""
    started: float | None = None
    up_seconds: float | None = None


@dataclass
class ServiceState(StateFile):
    """state.json: what the supervisor is doing now. Each pid comes with its start time
    (workbench.processes), so a pid reused after a crash is not taken for the service."""

    name: str
    supervisor_pid: int
    started: float
    pid: int | None = None
    status: str = ServiceStatus.STARTING
    restarts: int = 0
    last_start: float | None = None
    last_exit: int | None = None
    standby_pid: int | None = None
    supervisor_pid_start: int | None = None
    pid_start: int | None = None
    standby_pid_start: int | None = None


@dataclass
class Service:
    """A running (or failed) service as `ps` shows it; holds no credentials."""

    name: str
    kind: str
    env: str | None
    host: str
    port: int
    url: str
    status: str
    health: str
    pid: int | None
    supervisor_pid: int | None
    restarts: int
    uptime: float | None
    standby_pid: int | None = None  # the warm spare that takes over after a crash
    cluster: str | None = None  # where it runs: None here, else the Ray cluster's address
    replicas: int | None = None  # on a cluster: its replicas

    @property
    def where(self) -> str:
        return f"ray {self.cluster} ×{self.replicas}" if self.cluster else "here"

    def to_json(self) -> dict:
        return asdict(self)
