"""The engine front's engine-core processes: starting them, routing requests to them,
recycling them, and replacing the ones that die.

Every core is forked by the engine's zygote (workbench.runtime.engine.core) and joined to
the front by a socketpair whose other end travels to the zygote with the request to fork. A
request goes to the serving worker with the fewest running requests that has room
(max_batch); when none has, it waits in the front's queue, and when the queue is full the
caller is told at once (Failure.QUEUE_FULL, HTTP 429). A request past its deadline ends
wherever it is (queued, or at its next token). Every request fails with a typed code
(workbench.runtime.engine.failures), the cores' included, which the front maps to a response.

Recycling: a worker past max_requests (requests it was given) or max_rss_mb (its resident
memory, pages shared with the zygote included) takes no new request once something can take
its place: the warm spare (a core that has warmed up and waits, kept whenever a limit is set
on a CPU engine), another serving worker, or, on a GPU, a replacement forked for the same
device. It finishes what it runs, is told to exit, and a new spare is forked. So no request
fails during a recycle.

A core that dies takes its running requests with it: those that had no token yet (or whose
batch had not begun) go back to the queue, the others fail (Failure.WORKER_DIED), and a spare
or a new fork takes its place.
Before the engine was first ready any failure to start is fatal (exit 2: the model cannot load);
after, three failed starts in a row, or the zygote's death, are (exit 1: the supervisor
restarts the engine).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

from workbench.runtime.engine import protocol
from workbench.runtime.engine.failures import EngineFailure, Failure
from workbench.runtime.engine.metrics import (
    BATCH_BUCKETS,
    QUEUE_BUCKETS,
    TOKEN_BUCKETS,
    Registry,
)
from workbench.runtime.engine.settings import EngineSettings
from workbench.runtime.prometheus import TTFT_BUCKETS

HOUSEKEEPING_S = 0.25
# Streamed chunks per second for all streams together: one stream gets every token as it
# comes, 32 share the budget (a chunk every ~30 ms each, several tokens in it), which leaves
# the CPU to generation instead of to writing and parsing tiny events.
CHUNKS_PER_S = 1000
MAX_CHUNK_INTERVAL_S = 0.05
MAX_START_FAILURES = 3
EXIT_GRACE_S = 5.0
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Settings:
    """What the pool needs: the engine's settings (each declared once, in
    workbench.runtime.engine.settings), its name and model, the devices it spreads over."""

    def __init__(self, **values: object):
        self.name: str = "engine"
        self.model: str = ""
        self.devices: list[str | None] = [None]
        self.log_level: str = "INFO"
        self.__dict__.update(vars(EngineSettings()))
        self.__dict__.update(values)

    @property
    def recycles(self) -> bool:
        return bool(self.max_requests or self.max_rss_mb)


class Stream:
    """One request in the pool: what was asked (kind: the task its cores run, payload and params
    as that task's core takes them), where it runs, what came back so far: token ids of a
    generation, or the result of a task that answers at once."""

    __slots__ = (
        "rid",
        "kind",
        "payload",
        "params",
        "prompt_tokens",
        "worker",
        "event",
        "ids",
        "finish",
        "failure",
        "tokens",
        "result",
        "created",
        "created_ns",
        "dispatched_ns",
        "first_ns",
        "done_ns",
        "last",
        "deadline",
        "cancelled",
    )

    def __init__(
        self,
        rid: str,
        kind: str,
        payload: list,
        params: dict,
        prompt_tokens: int,
        timeout_s: float,
    ):
        self.rid, self.kind, self.payload, self.params = rid, kind, payload, params
        self.prompt_tokens = prompt_tokens
        self.worker: Worker | None = None
        self.event = asyncio.Event()
        self.ids: list[int] = []  # new token ids not yet read by the HTTP side
        self.finish: str | None = None
        self.failure: EngineFailure | None = None
        self.tokens = 0
        self.result: object = None  # what a core sent for an answer-at-once task
        self.created = time.perf_counter()
        self.created_ns = time.time_ns()
        self.dispatched_ns = self.first_ns = self.done_ns = 0
        self.last = 0.0
        self.deadline = self.created + timeout_s
        self.cancelled = False

    @property
    def done(self) -> bool:
        return self.finish is not None or self.failure is not None

    def fail(self, failure: Failure, message: str) -> None:
        self.failure = EngineFailure(failure, message)
        self.done_ns = time.time_ns()
        self.event.set()

    async def settle(self) -> None:
        """Wait until the request finished, failed or was cancelled."""
        while not self.done and not self.cancelled:
            await self.event.wait()
            self.event.clear()

    def take(self) -> list[int]:
        ids, self.ids = self.ids, []
        self.event.clear()
        return ids


class Zygote:
    """The process that loads the model once and forks every engine core from it."""

    def __init__(self, pool: Pool):
        settings = pool.settings
        ours, theirs = socket.socketpair()
        argv = [
            pool.python,
            "-m",
            "workbench.runtime.engine.core",
            "--fd",
            str(theirs.fileno()),
            "--model",
            settings.model,
            "--task",
            settings.task,
            "--name",
            settings.name,
            "--threads",
            str(settings.threads),
            "--max-batch",
            str(settings.max_batch),
            "--max-wait-ms",
            str(settings.max_wait_ms),
            "--handler",
            settings.handler,
            "--log-level",
            settings.log_level,
        ]
        if settings.devices != [None]:
            argv.append("--gpu")
        self.proc = subprocess.Popen(
            argv, pass_fds=(theirs.fileno(),), env=pool.child_env, stdin=subprocess.DEVNULL
        )
        theirs.close()
        self.sock = ours
        self.info: dict = {}
        self.fatal: str | None = None

    def fork(self, wid: int, device: str | None, sock: socket.socket) -> None:
        """Ask for a core; its socket to us goes along as a file descriptor."""
        fds = array.array("i", [sock.fileno()])
        message = protocol.encode(("fork", wid, device))
        self.sock.setblocking(True)  # a few bytes on a socketpair: never waits in practice
        try:
            self.sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        finally:
            self.sock.setblocking(False)


class Worker:
    """One engine-core process (forked by the zygote) and the requests it runs."""

    def __init__(self, pool: Pool, wid: int, device: str | None, spare: bool):
        self.pool, self.wid, self.device = pool, wid, device
        self.state = "starting"  # -> spare | serving -> draining -> exiting -> exited
        self.becomes = "spare" if spare else "serving"
        self.running: dict[str, Stream] = {}
        self.served = 0
        self.rss_mb = 0.0
        self.pid: int | None = None
        self.info: dict = {}
        self.fatal: str | None = None
        self.replaces: Worker | None = None  # the worker this one takes over from
        self.transport: asyncio.Transport | None = None
        ours, theirs = socket.socketpair()
        pool.zygote.fork(wid, device, theirs)
        theirs.close()
        self.sock = ours

    def send(self, message: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(protocol.encode(message))

    def due(self) -> bool:
        s = self.pool.settings
        return bool(
            (s.max_requests and self.served >= s.max_requests)
            or (s.max_rss_mb and self.rss_mb > s.max_rss_mb)
        )

    def read_rss(self) -> None:
        """Resident memory not shared with the zygote's pages still counts: a leak shows."""
        try:
            with open(f"/proc/{self.pid}/statm") as handle:
                self.rss_mb = int(handle.read().split()[1]) * PAGE / 2**20
        except (OSError, ValueError, IndexError, TypeError):
            pass

    def kill(self) -> None:
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


class _Link(asyncio.Protocol):
    """Frames from one socket to its handlers on the event loop."""

    def __init__(self, on_message: Callable[[tuple], None], on_lost: Callable[[], None]):
        self.on_message, self.on_lost = on_message, on_lost
        self.decoder = protocol.Decoder()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for message in self.decoder.feed(data):
            self.on_message(message)

    def connection_lost(self, exc) -> None:
        self.on_lost()


class Pool:
    def __init__(self, settings: Settings, metrics: Registry, log, python: str = sys.executable):
        self.settings, self.metrics, self.log, self.python = settings, metrics, log, python
        self.child_env = dict(os.environ)
        self.zygote: Zygote | None = None
        self.workers: list[Worker] = []
        self.queue: collections.deque[Stream] = collections.deque()
        self.next_id = 0
        self.ready = False  # every first worker has been ready once
        self.failed: str | None = None
        self.failed_code = 2  # 2: cannot start (bad model, bad input); 1: broke while serving
        self.closing = False
        self.start_failures = 0
        self.info: dict = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_change: Callable[[], None] = lambda: None
        self._declare()

    # -- life cycle -----------------------------------------------------------------------
    def start_zygote(self) -> None:
        """Start the zygote (before the web server imports anything, so the slow imports of
        the model's packages overlap with it)."""
        self.zygote = Zygote(self)

    def start_workers(self) -> None:
        """Ask the zygote for the first workers."""
        devices = self.settings.devices
        for i in range(self.settings.workers):
            self._spawn(devices[i % len(devices)], spare=False)

    async def attach(self) -> None:
        """Connect to the zygote's and the workers' sockets; start housekeeping."""
        self.loop = asyncio.get_running_loop()
        zygote = self.zygote
        link = _Link(self._on_zygote, self._zygote_lost)
        await self.loop.create_connection(lambda: link, sock=zygote.sock)
        for worker in self.workers:
            await self._connect(worker)
        self.loop.create_task(self._housekeeping())

    async def _connect(self, worker: Worker) -> None:
        link = _Link(lambda m: self.on_message(worker, m), lambda: self.on_lost(worker))
        await self.loop.create_connection(lambda: link, sock=worker.sock)
        worker.transport = link.transport

    def _on_zygote(self, message: tuple) -> None:
        if message[0] == "forked":
            for worker in self.workers:
                if worker.wid == message[1]:
                    worker.pid = message[2]
        elif message[0] == "zygote":
            self.zygote.info = message[1]
        elif message[0] == "fatal":
            self.zygote.fatal = message[1]

    def _zygote_lost(self) -> None:
        if self.closing:
            return
        try:
            code = self.zygote.proc.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.zygote.proc.kill()
            code = self.zygote.proc.wait()
        self.failed = self.zygote.fatal or f"the engine's zygote process exited (status {code})"
        self.failed_code = 1 if self.ready else 2
        self.log.error(self.failed)
        self.on_change()

    def _spawn(self, device: str | None, spare: bool) -> Worker:
        worker = Worker(self, self.next_id, device, spare)
        self.next_id += 1
        self.workers.append(worker)
        if self.loop is not None:
            self.loop.create_task(self._connect(worker))
        return worker

    async def close(self, grace: float = EXIT_GRACE_S) -> None:
        """Stop every worker: in-flight requests are cancelled, then exit, then kill."""
        self.closing = True
        for stream in list(self.queue):
            stream.fail(Failure.SHUTTING_DOWN, "the engine is shutting down")
        self.queue.clear()
        for worker in self.workers:
            for rid in list(worker.running):
                worker.send(("cancel", rid))
            worker.send(("exit",))
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.workers:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            worker.kill()
        if self.zygote is not None and self.zygote.proc.poll() is None:
            self.zygote.proc.terminate()
            try:
                self.zygote.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.zygote.proc.kill()
                self.zygote.proc.wait()

    # -- requests -------------------------------------------------------------------------
    def submit(self, stream: Stream) -> None:
        if len(self.queue) >= self.settings.max_queue:
            self.metrics.inc("workbench_engine_rejected_total", reason="queue_full")
            waiting = f"{self.settings.max_queue} requests are waiting"
            raise EngineFailure(Failure.QUEUE_FULL, f"the engine is busy: {waiting}; retry shortly")
        self.queue.append(stream)
        self.dispatch()

    def cancel(self, stream: Stream) -> None:
        """The client went away (or timed out): forget the request wherever it is."""
        if stream.cancelled or stream.done:
            return
        stream.cancelled = True
        worker = stream.worker
        if worker is None:
            if stream in self.queue:
                self.queue.remove(stream)
            return
        if worker.running.pop(stream.rid, None) is not None:
            worker.send(("cancel", stream.rid))
            self._after_finish(worker)

    def dispatch(self) -> None:
        while self.queue:
            worker = self._pick()
            if worker is None:
                break
            stream = self.queue.popleft()
            if time.perf_counter() > stream.deadline:
                self._timeout(stream)
                continue
            stream.worker = worker
            stream.dispatched_ns = time.time_ns()
            worker.running[stream.rid] = stream
            worker.served += 1
            worker.send((stream.kind, stream.rid, stream.payload, stream.params))
            if worker.due():
                self._retire(worker)
        self._gauges()

    def _pick(self) -> Worker | None:
        best = None
        for worker in self.workers:
            if worker.state != "serving" or len(worker.running) >= self.settings.max_batch:
                continue
            if worker.due() and self._replaceable(worker):
                continue
            if best is None or len(worker.running) < len(best.running):
                best = worker
        return best

    def stream_interval(self) -> float:
        """Seconds between two chunks of one stream, given how many stream now."""
        running = sum(len(w.running) for w in self.workers)
        return min(MAX_CHUNK_INTERVAL_S, (running - 1) / CHUNKS_PER_S) if running > 1 else 0.0

    # -- messages from the cores ----------------------------------------------------------
    def on_message(self, worker: Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "tokens":
            self._tokens(worker, message[1], message[2])
        elif kind == "started":
            self._started(worker, message[1])
        elif kind == "results":
            self._batch_done(message[2])
            for rid, result in message[1]:
                stream = worker.running.pop(rid, None)
                if stream is not None:
                    stream.result = result
                    stream.finish = "stop"
                    stream.done_ns = time.time_ns()
                    stream.event.set()
            self._after_finish(worker)
        elif kind == "failed":
            stream = worker.running.pop(message[1], None)
            if stream is not None:
                stream.fail(Failure(message[2]), message[3])
            self._after_finish(worker)
        elif kind == "ready":
            self._ready(worker, message[1])
        elif kind == "fatal":
            worker.fatal = message[1]

    def _started(self, worker: Worker, rids: list[str]) -> None:
        """A batch of a task that answers at once began: its requests left the queue."""
        now, now_ns = time.perf_counter(), time.time_ns()
        histogram = self.metrics.histogram("workbench_engine_queue_seconds", QUEUE_BUCKETS)
        for rid in rids:
            stream = worker.running.get(rid)
            if stream is not None:
                stream.first_ns = now_ns
                histogram.observe(now - stream.created)

    def _batch_done(self, stats: dict) -> None:
        self.metrics.histogram("workbench_engine_batch_size", BATCH_BUCKETS).observe(stats["batch"])
        self.metrics.histogram("workbench_engine_inference_seconds", QUEUE_BUCKETS).observe(
            stats["inference_s"]
        )

    def _tokens(self, worker: Worker, batch: int, outputs: list) -> None:
        now = time.perf_counter()
        self.metrics.histogram("workbench_engine_batch_size", BATCH_BUCKETS).observe(batch)
        finished = False
        generated = 0
        late = []
        for rid, ids, finish in outputs:
            stream = worker.running.get(rid)
            if stream is None:
                continue  # cancelled meanwhile
            if now > stream.deadline and finish is None:
                late.append(stream)
                continue
            n = len(ids)
            generated += n
            if n:
                if not stream.tokens:
                    stream.first_ns = time.time_ns()
                    ttft = now - stream.created
                    self.metrics.histogram(
                        "workbench_engine_time_to_first_token_seconds", TTFT_BUCKETS
                    ).observe(ttft)
                else:
                    gap = (now - stream.last) / n
                    self.metrics.histogram(
                        "workbench_engine_inter_token_latency_seconds", TOKEN_BUCKETS
                    ).observe(gap, n)
                stream.tokens += n
                stream.last = now
                stream.ids.extend(ids)
            if finish is not None:
                stream.finish = finish
                stream.done_ns = time.time_ns()
                del worker.running[rid]
                finished = True
            stream.event.set()
        self.metrics.inc("workbench_engine_generation_tokens_total", generated)
        for stream in late:
            self._timeout(stream)
        if finished:
            self._after_finish(worker)

    def _ready(self, worker: Worker, info: dict) -> None:
        worker.info = info
        worker.pid = worker.pid or info.get("pid")  # the zygote's word may come second
        worker.read_rss()
        limit = self.settings.max_rss_mb
        if limit and worker.rss_mb > limit:
            self.settings.max_rss_mb = 0  # recycling would never end
            self.log.warning(
                f"max_rss_mb={limit:g} is below a fresh worker's {worker.rss_mb:.0f} MB; "
                "recycling on memory is off"
            )
        self.info = self.info or info
        worker.state = worker.becomes
        self.start_failures = 0
        self.log.info(
            "engine worker ready",
            extra={"fields": {"worker": worker.wid, "pid": worker.pid, "as": worker.state}},
        )
        if not self.ready and all(w.state != "starting" for w in self.workers):
            self.ready = True
            self.on_change()
        if worker.state == "serving":
            self._retire_replaced()
        self._recycle()
        self.dispatch()

    def on_lost(self, worker: Worker) -> None:
        """The core's socket closed: it exited (or is about to)."""
        worker.kill()  # a core that closed its socket is of no use
        was = worker.state
        worker.state = "exited"
        self.workers.remove(worker)
        orphans = list(worker.running.values())
        worker.running.clear()
        for stream in orphans:  # first_ns: its first token came, or its batch began
            if not stream.first_ns and not self.closing:
                stream.worker = None
                self.queue.appendleft(stream)  # nothing was sent yet: run it elsewhere
            else:
                stream.fail(Failure.WORKER_DIED, "the engine worker running this request exited")
        if self.closing:
            return
        if was in ("exiting", "draining"):
            self.log.info("engine worker recycled", extra={"fields": {"worker": worker.wid}})
        else:
            self._died(worker, was)
        self._recycle()
        self.dispatch()

    def _died(self, worker: Worker, was: str) -> None:
        fields = {"worker": worker.wid, "pid": worker.pid, "was": was}
        self.log.error(worker.fatal or "engine worker exited", extra={"fields": fields})
        self.metrics.inc("workbench_engine_worker_deaths_total")
        if was == "starting":
            self.start_failures += 1
            if not self.ready or self.start_failures >= MAX_START_FAILURES:
                self.failed = worker.fatal or "an engine worker exited while starting"
                self.failed_code = 1 if self.ready else 2
                self.on_change()
                return
        if was == "spare":
            return  # _recycle starts another
        spare = self._spare()
        if spare is not None and spare.state == "spare":
            self._promote(spare)
        else:
            self._spawn(worker.device, spare=False)

    def _promote(self, spare: Worker) -> None:
        spare.state = spare.becomes = "serving"

    # -- recycling ------------------------------------------------------------------------
    def _replaceable(self, worker: Worker) -> bool:
        """Something else can take worker's requests now."""
        others = [
            w for w in self.workers if w is not worker and w.state == "serving" and not w.due()
        ]
        spare = self._spare()
        return bool(others) or (spare is not None and spare.state == "spare")

    def _spare(self) -> Worker | None:
        for worker in self.workers:
            if worker.becomes == "spare" and worker.state in ("starting", "spare"):
                return worker
        return None

    def _retire(self, worker: Worker) -> None:
        """Take worker out of service if its place can be filled; else it serves on until a
        spare or replacement is ready (_recycle tries again)."""
        if worker.state != "serving":
            return
        spare = self._spare()
        if spare is not None and spare.state == "spare":
            self._promote(spare)
        elif not self._replaceable(worker):
            self._replacement_for(worker)
            return
        worker.state = "draining"
        self.metrics.inc("workbench_engine_recycles_total")
        fields = {"worker": worker.wid, "served": worker.served, "rss_mb": round(worker.rss_mb, 1)}
        self.log.info("engine worker retiring", extra={"fields": fields})
        if not worker.running:
            self._exit(worker)

    def _replacement_for(self, worker: Worker) -> None:
        """On a GPU (no warm spare), a new core on worker's device; on a CPU, the spare."""
        if any(w.replaces is worker for w in self.workers):
            return
        if self.settings.recycles and worker.device is None:
            if self._spare() is None:
                self._spawn(None, spare=True)
            return
        fresh = self._spawn(worker.device, spare=False)
        fresh.replaces = worker

    def _retire_replaced(self) -> None:
        for worker in list(self.workers):
            target = worker.replaces
            if target is not None and worker.state == "serving":
                worker.replaces = None
                self._retire(target)

    def _exit(self, worker: Worker) -> None:
        worker.state = "exiting"
        worker.send(("exit",))

    def _after_finish(self, worker: Worker) -> None:
        if worker.state == "draining" and not worker.running:
            self._exit(worker)
        self.dispatch()

    def _recycle(self) -> None:
        """Retire the workers that are due; keep one warm spare where limits are set."""
        if self.closing or self.failed or not self.ready:
            return
        for worker in list(self.workers):
            if worker.state == "serving" and worker.due():
                self._retire(worker)
        wants_spare = self.settings.recycles and self.settings.devices == [None]
        if wants_spare and self._spare() is None:
            self._spawn(None, spare=True)

    async def _housekeeping(self) -> None:
        while not self.closing:
            await asyncio.sleep(HOUSEKEEPING_S)
            now = time.perf_counter()
            for worker in self.workers:
                if worker.state in ("serving", "spare", "draining"):
                    worker.read_rss()
                for stream in list(worker.running.values()):
                    if now > stream.deadline:
                        self._timeout(stream)
            for stream in [s for s in self.queue if now > s.deadline]:
                self._timeout(stream)
            self._recycle()
            self._gauges()

    def _timeout(self, stream: Stream) -> None:
        self.cancel(stream)
        stream.fail(Failure.TIMEOUT, f"timed out after {self.settings.timeout:g} s")
        self.metrics.inc("workbench_engine_rejected_total", reason="timeout")

    # -- metrics --------------------------------------------------------------------------
    def _declare(self) -> None:
        m = self.metrics
        m.declare("workbench_engine_queue_depth", "gauge", "Requests waiting for a worker.")
        m.declare("workbench_engine_running_requests", "gauge", "Requests the workers run now.")
        m.declare("workbench_engine_workers", "gauge", "Engine-core processes by state.")
        m.declare("workbench_engine_worker_rss_bytes", "gauge", "Resident memory of each worker.")
        m.declare(
            "workbench_engine_batch_size",
            "histogram",
            "Requests per generation step; inputs per batch of a task that answers at once.",
        )
        m.declare(
            "workbench_engine_queue_seconds",
            "histogram",
            "From request to the start of its batch (a task that answers at once).",
        )
        m.declare(
            "workbench_engine_inference_seconds", "histogram", "Time the model took per batch."
        )
        m.declare(
            "workbench_engine_time_to_first_token_seconds",
            "histogram",
            "From request to its first token.",
        )
        m.declare(
            "workbench_engine_inter_token_latency_seconds",
            "histogram",
            "Between two tokens of one stream.",
        )
        m.declare("workbench_engine_generation_tokens_total", "counter", "Tokens generated.")
        m.declare("workbench_engine_recycles_total", "counter", "Workers retired at a limit.")
        m.declare("workbench_engine_worker_deaths_total", "counter", "Workers that died.")
        m.declare("workbench_engine_rejected_total", "counter", "Requests refused, by reason.")
        m.set("workbench_engine_generation_tokens_total", 0)
        m.set("workbench_engine_recycles_total", 0)
        m.set("workbench_engine_worker_deaths_total", 0)

    def _gauges(self) -> None:
        m = self.metrics
        m.set("workbench_engine_queue_depth", len(self.queue))
        m.set("workbench_engine_running_requests", sum(len(w.running) for w in self.workers))
        for state in ("starting", "spare", "serving", "draining", "exiting"):
            m.set(
                "workbench_engine_workers", sum(w.state == state for w in self.workers), state=state
            )
        m.values["workbench_engine_worker_rss_bytes"].clear()
        for w in self.workers:
            if w.rss_mb:
                m.set("workbench_engine_worker_rss_bytes", w.rss_mb * 2**20, worker=str(w.wid))
