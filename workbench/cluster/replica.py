"""One replica of an engine deployed on Ray Serve (`workbench up ENGINE --cluster ADDRESS`):
a Serve replica (an actor in the cluster's Python, with the GPUs Ray gave it) that runs the
engine in the MODEL's env as a subprocess and forwards HTTP to it, streams included.

Why a subprocess: Ray's workers run the cluster's Python (the tool's venv), the engine runs
in the model's env, which lacks Ray (`runtime_env={"py_executable": ...}` with such an
interpreter hangs) and would cost a copy of the whole env as a Ray runtime_env. So each replica
starts the engine's launch (workbench.serving.launch, as `workbench up` starts it here: the
env's interpreter, `--port 0` on 127.0.0.1, in the project's folder), with Ray's
CUDA_VISIBLE_DEVICES (Ray's assignment wins over a manifest pin); on a node where the GPUs
Ray schedules do not exist (`cluster up --gpus-per-node` on a machine without GPUs) the
engine runs on the CPU and says so.

Routes are the engine's own under the application's route prefix (/ENGINE/v1/..., /healthz
with this replica's id, node and GPUs added), plus two that span replicas: /metrics (every
replica's engine metrics, each series labelled with its replica, and an info series per
replica) and /replicas (each replica's health). A replica reaches the others through a
small Probe actor per replica on the replica's node (named APP/REPLICA in NAMESPACE; it
dies with its replica, which owns it).

Every socket stays on the node's address: the engine binds 127.0.0.1, and Serve's
inter-deployment gRPC server, which Ray binds to [::]:0, is bound to the node's IP
instead (bind_serve_grpc_to_node). Imported by Ray workers: Ray, aiohttp (ray[default])
and the engine's API and Prometheus modules only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque

from workbench.runtime import contract, prometheus

NAMESPACE = "workbench-serve"
START_TIMEOUT_S = 600.0
STOP_GRACE_S = 10.0
PROBE_TIMEOUT_S = 5.0
TAIL_LINES = 200
# Request headers not forwarded: the engine gets its own Host (it checks it), and aiohttp
# frames the body itself.
HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "content-length",
    }
)
# Variables of the Ray worker that must not reach the env's interpreter.
NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")


def bind_serve_grpc_to_node() -> bool:
    """Make this replica's inter-deployment gRPC server (Ray binds it to `[::]:0`, every
    interface) listen on the node's address only; it is what routers on other nodes dial
    (node_ip:port), so nothing else changes. Call before Serve starts that server (in the
    replica's constructor). False where Ray no longer looks as expected (the loopback
    test of the deployment then fails, naming the socket)."""
    import ray

    try:
        from ray.serve._private import replica as serve_replica
    except ImportError:
        return False
    original = getattr(serve_replica, "add_port_to_grpc_server", None)
    if original is None:
        return False
    if getattr(original, "workbench_bound", False):
        return True
    host = ray.util.get_node_ip_address()
    host = f"[{host}]" if ":" in host else host

    def bound(server, address: str):
        if address.startswith("[::]:"):
            address = f"{host}:{address[len('[::]:') :]}"
        return original(server, address)

    bound.workbench_bound = True
    serve_replica.add_port_to_grpc_server = bound
    return True


def engine_environ(base: dict[str, str], extra: dict[str, str], gpus: list[str]):
    """The engine's environment: the node's (without the Ray worker's Python settings),
    the engine's own variables, and Ray's GPUs, none for a replica without (so it never
    sees the node's), WORKBENCH_GPUS_ASSIGNED saying they beat a pin."""
    env = {k: v for k, v in base.items() if k not in NOT_INHERITED}
    env.update(extra)
    visible = ",".join(gpus)
    env["CUDA_VISIBLE_DEVICES"] = visible
    env[contract.GPUS_ASSIGNED.name] = visible
    return env


def placement(gpus: list[str], node_has_gpus: bool) -> tuple[bool, str | None]:
    """(run on the CPU, why) for the GPUs Ray assigned this replica."""
    if not gpus:
        return True, None
    if not node_has_gpus:
        return True, (
            f"Ray scheduled GPU(s) {','.join(gpus)} on a node without GPUs (a cluster with "
            "--gpus-per-node on a machine that has none): the engine runs on the CPU"
        )
    return False, None


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?(\s.*)$")


def merge_metrics(replicas: list[tuple[dict[str, str], str]]) -> str:
    """One Prometheus text exposition from the replicas' engines: each series gets its
    replica's labels first; a family's HELP and TYPE appear once and its samples stay
    together, as the format asks. replicas: (labels, the engine's /metrics text)."""
    families: dict[str, dict] = {}
    order: list[str] = []

    def family(name: str) -> dict:
        if name not in families:
            families[name] = {"help": None, "type": None, "samples": []}
            order.append(name)
        return families[name]

    for labels, text in replicas:
        current: str | None = None
        prefix = prometheus.labels(labels.items())
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                parts = line.split(" ", 3)
                if len(parts) < 3:
                    continue
                current = parts[2]
                entry = family(current)
                key = "help" if parts[1] == "HELP" else "type"
                entry[key] = entry[key] or line
                continue
            match = SAMPLE.match(line)
            if not match:
                continue
            name, existing, rest = match.groups()
            owner = current if current and name.startswith(current) else name
            inner = existing[1:-1] if existing else ""
            merged = ",".join(p for p in (prefix, inner) if p)
            family(owner)["samples"].append(f"{name}{{{merged}}}{rest}")
    lines: list[str] = []
    for name in order:
        entry = families[name]
        lines += [line for line in (entry["help"], entry["type"]) if line]
        lines += entry["samples"]
    return "\n".join(lines) + "\n"


def replica_series(info: dict) -> str:
    """The info series of one replica: where it runs and on which GPUs."""
    labels = {
        "replica": info["replica"],
        "node": info["node"],
        "gpus": ",".join(info["gpus"]),
        "device": info["device"],
        "engine_pid": str(info["engine_pid"]),
    }
    lines = prometheus.family(
        "workbench_replica_info",
        "gauge",
        "A replica of the engine on Ray Serve.",
        [(prometheus.labels(labels.items()), 1)],
    )
    return "\n".join(lines) + "\n"


def why_stopped(lines: list[str]) -> str:
    """The engine's last error message (its JSON log), else its last line."""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            return str(entry.get("msg"))
    meaningful = [line.strip() for line in lines if line.strip()]
    return meaningful[-1] if meaningful else "(no output)"


def _get(port: int, path: str, timeout: float) -> tuple[int, str, bytes]:
    """(status, content type, body) of GET path on the engine at 127.0.0.1:port."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.headers.get("content-type", ""), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


class EngineProcess:
    """The engine subprocess: started in a session of its own (stopped as a group), its
    output appended to the project's log for the engine and kept in a short tail, its
    port read from its "listening" line."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, log: str, header: str):
        from workbench.subprocesses import die_with_parent

        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.port: int | None = None
        self.stopping = False
        self.log = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed by the reader
        self.log.write(header + "\n")
        self.log.flush()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # the front, its zygote and cores: one group to stop
            preexec_fn=die_with_parent,  # and gone with the replica, even on SIGKILL
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                self.log.write(line)
                self.log.flush()
                self.tail.append(line.rstrip("\n"))
                if self.port is None and '"listening"' in line:
                    with contextlib.suppress(ValueError, KeyError, AttributeError):
                        url = json.loads(line)["url"]
                        self.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        finally:
            self.log.close()

    def exited(self) -> int | None:
        return self.proc.poll()

    def why(self) -> str:
        return why_stopped(list(self.tail))

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                await asyncio.to_thread(self.reader.join, 5)
                raise RuntimeError(f"the engine exited ({code}): {self.why()}")
            if self.port is not None:
                with contextlib.suppress(OSError):
                    status, _, _ = await asyncio.to_thread(_get, self.port, "/healthz", 2.0)
                    if status == 200:
                        return
            await asyncio.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the engine was not healthy after {timeout:g} s: {self.why()}")

    def stop(self) -> None:
        """SIGTERM to the engine's group, SIGKILL to what is left after the grace."""
        self.stopping = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class Probe:
    """A replica's helper on its node (a Ray actor with no CPU): the other replicas ask it
    for this replica's info, health and metrics."""

    def __init__(self, info: dict, port: int) -> None:
        self.info, self.port = info, port

    def describe(self) -> dict:
        return self.info

    def fetch(self, path: str) -> tuple[int, str]:
        try:
            status, _, body = _get(self.port, path, PROBE_TIMEOUT_S)
        except OSError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        return status, body.decode("utf-8", "replace")


class EngineReplica:
    """The Serve deployment class (wrapped with serve.ingress() by workbench.cluster.serving):
    starts the engine, answers as an ASGI app, is health-checked through the engine's
    /healthz, stops the engine when Serve stops the replica."""

    async def __init__(self, spec: dict) -> None:
        import ray
        from ray import serve
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from workbench.gpus import inventory

        bind_serve_grpc_to_node()
        context = serve.get_replica_context()
        self.app_name = context.app_name
        self.replica = context.replica_id.unique_id
        self.spec = spec
        node_id = ray.get_runtime_context().get_node_id()
        gpus = [str(g) for g in ray.get_gpu_ids()] if spec["gpus"] else []
        cpu, note = placement(gpus, bool(gpus) and bool(inventory.read().gpus))
        argv = list(spec["argv"]) + (["--device", "cpu"] if cpu else [])
        env = engine_environ(dict(os.environ), spec["env"], gpus)
        node = f"{ray.util.get_node_ip_address()}/{node_id[:12]}"
        header = json.dumps(
            {
                "msg": "replica starting the engine",
                "app": spec["name"],
                "replica": self.replica,
                "node": node,
                "gpus": gpus,
                "note": note,
            }
        )
        if not os.path.isdir(spec["cwd"]):
            raise RuntimeError(
                f"the project folder {spec['cwd']} is not on node {node}: an engine on Ray "
                "Serve runs the project and its env where they are (every node needs them at "
                "the same path, e.g. a shared filesystem)"
            )
        self.engine = EngineProcess(argv, env, spec["cwd"], spec["log"], header)
        try:
            await self.engine.wait_healthy(spec["start_timeout"])
        except BaseException:
            self.engine.stop()
            raise
        self.info = {
            "replica": self.replica,
            "node": node,
            "gpus": gpus,
            "device": "cpu" if cpu else "cuda",
            "note": note,
            "engine_pid": self.engine.proc.pid,
            "port": self.engine.port,
        }
        self.probe = (
            ray.remote(Probe)
            .options(
                name=f"{self.app_name}/{self.replica}",
                namespace=NAMESPACE,
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote(self.info, self.engine.port)
        )
        self.session = None  # aiohttp's, made in the loop that serves requests
        threading.Thread(target=self._exit_with_engine, daemon=True).start()

    def _exit_with_engine(self) -> None:
        """A replica whose engine died exits with it. Serve would notice only at its next
        health check, and meanwhile its router would favour the replica that answers
        fastest (with a 503); a dead actor is dropped from routing at once, and replaced."""
        code = self.engine.proc.wait()
        if not self.engine.stopping:
            why = self.engine.why()
            print(json.dumps({"msg": "the engine exited: so does its replica", "code": code,
                              "why": why}), flush=True)  # fmt: skip
            os._exit(1)

    def __serve_build_asgi_app__(self):
        async def app(scope: dict, receive, send) -> None:  # a function: uvicorn takes
            await self.asgi(scope, receive, send)  # a bound method for ASGI 2

        return app

    async def check_health(self) -> None:
        """Serve replaces a replica whose engine exited or stopped answering healthy."""
        code = self.engine.exited()
        if code is not None:
            raise RuntimeError(f"the engine exited ({code}): {self.engine.why()}")
        status, _, body = await asyncio.to_thread(_get, self.engine.port, "/healthz", 5.0)
        if status != 200:
            raise RuntimeError(f"the engine answers /healthz with {status}: {body[:200]!r}")

    async def __del__(self) -> None:
        if getattr(self, "session", None) is not None:
            await self.session.close()
        if getattr(self, "engine", None) is not None:
            await asyncio.to_thread(self.engine.stop)

    # -- ASGI ---------------------------------------------------------------------------
    async def asgi(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if scope["method"] == "GET" and path == "/metrics":
            return await self._respond(send, 200, await self.metrics(), "text/plain")
        if scope["method"] == "GET" and path == "/replicas":
            body = json.dumps(await self.replicas()).encode()
            return await self._respond(send, 200, body, "application/json")
        if scope["method"] == "GET" and path == "/healthz":
            return await self._healthz(send)
        await self._forward(scope, receive, send, path)

    async def _respond(self, send, status: int, body: bytes | str, kind: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        headers = [(b"content-type", kind.encode()), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _healthz(self, send) -> None:
        try:
            status, _, body = await asyncio.to_thread(_get, self.engine.port, "/healthz", 5.0)
            data = json.loads(body)
        except (OSError, ValueError):
            status, data = 503, {"status": "down"}
        if isinstance(data, dict):
            data["replica"] = self.info
        await self._respond(send, status, json.dumps(data).encode(), "application/json")

    async def _probes(self) -> list:
        import ray

        def named() -> list:
            found = ray.util.list_named_actors(all_namespaces=True)
            mine = [
                a["name"]
                for a in found
                if a.get("namespace") == NAMESPACE and a["name"].startswith(f"{self.app_name}/")
            ]
            handles = []
            for name in sorted(mine):
                with contextlib.suppress(ValueError):
                    handles.append(ray.get_actor(name, namespace=NAMESPACE))
            return handles

        return await asyncio.to_thread(named)

    async def _ask(self, method: str, *args) -> list:
        """method(*args) of every replica's probe; an answer or the exception, each."""
        probes = await self._probes()

        async def one(probe):
            return await asyncio.wait_for(getattr(probe, method).remote(*args), PROBE_TIMEOUT_S)

        return await asyncio.gather(*(one(p) for p in probes), return_exceptions=True)

    async def metrics(self) -> str:
        infos = await self._ask("describe")
        texts = await self._ask("fetch", "/metrics")
        parts, series = [], ""
        for info, answer in zip(infos, texts, strict=False):
            if isinstance(info, BaseException) or isinstance(answer, BaseException):
                continue
            status, text = answer
            if status == 200:
                parts.append(({"replica": info["replica"]}, text))
                series += replica_series(info)
        return series + merge_metrics(parts)

    async def replicas(self) -> list[dict]:
        infos = await self._ask("describe")
        health = await self._ask("fetch", "/healthz")
        found = []
        for info, answer in zip(infos, health, strict=False):
            if isinstance(info, BaseException):
                continue
            entry = dict(info)
            if isinstance(answer, BaseException):
                entry["health"] = {"status": "unreachable", "error": type(answer).__name__}
            else:
                with contextlib.suppress(ValueError):
                    entry["health"] = json.loads(answer[1])
                entry["healthy"] = answer[0] == 200
            found.append(entry)
        return found

    async def _forward(self, scope: dict, receive, send, path: str) -> None:
        """The request to the engine, its answer back as it comes (SSE chunk by chunk)."""
        import aiohttp

        from workbench.runtime.engine import api

        if self.session is None:
            self.session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=10),
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
            )
        limit = self.spec["max_body_kb"] * 1024
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                error = api.ApiError(413, f"request body larger than {limit // 1024} KiB")
                return await self._respond(send, 413, error.body(), "application/json")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope.get("headers", ())
            if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://127.0.0.1:{self.engine.port}{path}" + (f"?{query}" if query else "")
        try:
            async with self.session.request(
                scope["method"], url, headers=headers, data=b"".join(chunks)
            ) as reply:
                out = [
                    (k.lower(), v)
                    for k, v in reply.raw_headers
                    if k.decode("latin-1").lower() not in ("transfer-encoding", "connection")
                ]
                await send({"type": "http.response.start", "status": reply.status, "headers": out})
                async for data in reply.content.iter_any():
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except aiohttp.ClientConnectionError as exc:
            error = api.ApiError(
                503, f"the engine of this replica does not answer ({type(exc).__name__})",
                kind="server_error",
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self._respond(send, 503, error.body(), "application/json")
