"""`workbench up ENGINE --cluster ADDRESS --replicas N`: an engine as a Ray Serve
application named after it, N replicas with `num_gpus` each (workbench.cluster.replica),
behind Serve's HTTP proxy on 127.0.0.1 at /ENGINE/v1 (plus /ENGINE/healthz, /metrics,
/replicas); `workbench down ENGINE` deletes that application and nothing else (never
`ray stop`, never another application, Serve itself stays up for the others).

Serve is started here when the cluster runs none: its one HTTP proxy on the head node
(proxy_location HeadOnly: nodes of a one-machine cluster share its loopback and so its
ports), bound to --host (127.0.0.1 by default) on a port picked free. Where Serve already
runs, its proxy is used as it is. The deployment is recorded in .workbench/services/ENGINE/
(service.json with the cluster's address, no credentials), so `ps`, `tunnel` and the apps
that front the engine find it like a local one. API keys reach the replicas as an argument
of the deployment (held by Ray's controller), never in argv, logs or `ps`.
"""

import logging
import re
import socket
import time
from collections.abc import Callable

from workbench.cluster import loopback, require_ray, stdout_to_stderr
from workbench.errors import CHECK_FAILED, WorkbenchError
from workbench.project import EngineEntry, Project
from workbench.runtime import contract
from workbench.serving import engines, launch, net, services
from workbench.serving.state import Kind, ServiceSpec

ROUTE = "/{name}"
HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 30.0
EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception):")


def _connect(address: str) -> None:
    """ray.init on the cluster; a cluster that is not there is said at once (Ray itself
    retries a GCS that does not answer for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        refused = None
    except (OSError, ValueError) as exc:
        refused = str(exc) or type(exc).__name__
    loopback.prepare_driver(address)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines go to stderr
    import ray

    try:
        if refused is None:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        refused = str(exc).splitlines()[0][:200]
    if refused is not None:
        raise WorkbenchError(
            f"no Ray cluster answers at {address} ({refused}); start one with "
            "`workbench cluster up`", CHECK_FAILED,
        )  # fmt: skip


def _check_gpus(replicas: int, gpus: float) -> None:
    """Refuse at once what the cluster cannot place (Serve would wait forever)."""
    import ray

    if gpus <= 0:
        return
    per_node = [n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("Alive")]
    fits = sum(int(total // gpus) for total in per_node)
    if fits < replicas:
        raise WorkbenchError(
            f"{replicas} replica(s) with {gpus:g} GPU(s) each do not fit on the cluster: its "
            f"nodes have {', '.join(f'{g:g}' for g in per_node) or 'no'} GPU(s) "
            "(--replicas, --gpus-per-replica; `workbench cluster list`)"
        )


def _start_serve(host: str) -> tuple[str, int]:
    """Serve's proxy (host, port): started here if the cluster runs none, else as it is.
    Serve's client is private API (nothing public gives the proxy's port without the
    dashboard's REST API); tests/reliability/test_cluster_serve.py notices a change."""
    from ray import serve
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": host, "port": net.pick_port(8100, host)},
        )
        client = _get_global_client()
    return client.http_config.host, client.http_config.port


def _spec(project: Project, engine: EngineEntry, gpus: float, timeout: float) -> dict:
    """What each replica gets: the engine's launch as it runs here (host 127.0.0.1, port 0:
    it picks one; its variables, keys included), where to log, its GPUs and limits."""
    described = launch.engine(project, engine, launch.Here(project), "127.0.0.1", 0)
    project.logs_dir.mkdir(parents=True, exist_ok=True)
    return {
        **described.to_json(),
        "log": str(project.log_path(engine.name)),
        "gpus": gpus,
        "max_body_kb": engine.settings.max_body_kb,
        "start_timeout": timeout,
    }


def deploy(
    project: Project,
    engine: EngineEntry,
    address: str,
    replicas: int,
    gpus: float,
    host: str,
    timeout: float,
    on_progress: Callable[[str], None],
) -> ServiceSpec:
    """Deploy (or update) the engine's application and wait until every replica is
    healthy; returns the record `ps` reads."""
    require_ray()
    if replicas < 1:
        raise WorkbenchError(f"--replicas {replicas}: at least 1")
    if gpus < 0:
        raise WorkbenchError(f"--gpus-per-replica {gpus:g}: 0 or more")
    spec = _spec(project, engine, gpus, timeout)
    began = time.monotonic()
    with stdout_to_stderr():
        _connect(address)
        import ray

        try:
            _check_gpus(replicas, gpus)
            on_progress("starting Serve on the cluster")
            proxy_host, port = _start_serve(host)
            if not net.is_loopback(proxy_host) and not engines.keys(project):
                raise WorkbenchError(
                    f"Serve on {address} listens on {proxy_host}: {engine.name} would be "
                    f"exposed without API keys; set {contract.API_KEYS.name}"
                )
            route = ROUTE.format(name=engine.name)
            _run(engine, spec, replicas, gpus, route)
            _wait_running(engine.name, replicas, began + timeout, on_progress)
        finally:
            ray.shutdown()
    url = f"http://127.0.0.1:{port}{route}/v1"
    record = ServiceSpec(
        name=engine.name,
        kind=Kind.ENGINE,
        argv=[],
        cwd=str(project.root),
        host=proxy_host,
        port=port,
        url=url,
        log=spec["log"],
        env_name=engine.env,
        cluster=address,
        replicas=replicas,
        gpus_per_replica=gpus,
        route=route,
        started=time.time(),
        up_seconds=round(time.monotonic() - began, 2),
    )
    services.record_deployment(project, record)
    deadline = time.monotonic() + 30
    while net.probe(net.health_url(Kind.ENGINE, port, route)) != "healthy":
        if time.monotonic() > deadline:
            raise WorkbenchError(
                f"{engine.name} is running on the cluster, but {url} does not answer healthy "
                "(is the cluster's head on this machine?)", CHECK_FAILED,
            )  # fmt: skip
        time.sleep(0.2)
    return record


def _run(engine: EngineEntry, spec: dict, replicas: int, gpus: float, route: str) -> None:
    from ray import serve

    from workbench.cluster.replica import EngineReplica
    from workbench.cluster.routing import LeastLoaded

    limits = engine.settings
    per_replica = limits.max_batch * max(1, limits.workers) + limits.max_queue
    deployment = serve.deployment(
        serve.ingress()(EngineReplica),
        name="engine",
        num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus, "num_cpus": 1},
        # the engine's own limits answer (429 with Retry-After), not Serve's queue
        max_ongoing_requests=per_replica,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        request_router_config={"request_router_class": LeastLoaded},
    )
    target = serve.RunTarget(deployment.bind(spec), name=engine.name, route_prefix=route)
    serve.run_many(
        [target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False
    )


def _wait_running(
    name: str, replicas: int, deadline: float, on_progress: Callable[[str], None]
) -> None:
    """Until the application runs with every replica; its failure or the deadline raise
    (and delete it: nothing half-deployed stays behind)."""
    from ray import serve

    said = ""
    while True:
        app = serve.status().applications.get(name)
        deployment = next(iter(app.deployments.values()), None) if app else None
        states = deployment.replica_states if deployment else {}
        running = states.get("RUNNING", 0)
        if app is not None and app.status == "RUNNING" and running >= replicas:
            return
        if app is not None and app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            message = (deployment.message if deployment else "") or app.message
            serve.delete(name)
            raise WorkbenchError(f"{name} failed to start on the cluster: {_short(message)}", 1)
        if time.monotonic() > deadline:
            message = (deployment.message if deployment else "") or (app.message if app else "")
            serve.delete(name)
            raise WorkbenchError(
                f"{name} was not running on the cluster in time ({running}/{replicas} replicas "
                f"up){': ' + _short(message) if message else ''}", CHECK_FAILED,
            )  # fmt: skip
        line = f"{running}/{replicas} replicas running"
        if line != said:
            on_progress(line)
            said = line
        time.sleep(0.5)


def _short(message: str) -> str:
    """Serve's messages carry tracebacks: the line that says what went wrong."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "(no message)"


def delete(project: Project, record: ServiceSpec) -> bool:
    """Delete the engine's application from its cluster (its replicas stop their engines);
    True if it was there. A cluster that no longer answers has nothing left to delete."""
    require_ray()
    with stdout_to_stderr():
        try:
            _connect(record.cluster)
        except WorkbenchError:
            return False
        import ray
        from ray import serve

        try:
            if record.name not in serve.status().applications:
                return False
            serve.delete(record.name)
            return True
        finally:
            ray.shutdown()
