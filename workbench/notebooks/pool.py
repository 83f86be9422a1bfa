"""Warm kernels for many runs (`workbench sweep`, `workbench test`): a pool of slots, each
a worker process that keeps one kernel warm across runs of the same env and puts it back
in a fresh kernel's state between runs (workbench.runtime.warmkernel).

Every run in a slot goes through the same lifecycle as `workbench run` (record saved
before the first cell, partial output notebook kept, secrets redacted). A kernel is
reused only after a run that ran through (ok, regressed, or a cell that raised) and a
clean restore; after a timeout, an interruption, a dead kernel or a change of env the
slot starts a fresh one.

The worker (`python -m workbench.notebooks.pool ROOT SLOT`) reads one JSON request per
line on stdin and answers on its own copy of stdout (its fd 1 then points at its log, so
nothing a kernel prints can garble the answers): {"event": "started", "id"} once the
record is saved, then {"event": "done", ...}. It ignores SIGINT (the pool decides: one
SIGTERM interrupts the run in hand, whose record then says so) and dies with its parent.
"""

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import INTERRUPTED, WorkbenchError
from workbench.notebooks.records import RunRecord, RunStatus
from workbench.project import Project
from workbench.subprocesses import die_with_parent, spawn

REUSABLE = {RunStatus.OK, RunStatus.REGRESSED, RunStatus.FAILED}
WARMKERNEL = "__import__('workbench.runtime.warmkernel').runtime.warmkernel"
STOP_GRACE_S = 30.0
HIDDEN_TIMEOUT_S = 60.0


@dataclass
class PoolRun:
    """One run for the pool: what `workbench run` takes."""

    notebook: Path
    parameters: dict = field(default_factory=dict)
    preset: str | None = None
    env: str | None = None
    timeout: float | None = None
    sweep: str | None = None

    def to_json(self) -> dict:
        return {**self.__dict__, "notebook": str(self.notebook)}


@dataclass
class PoolResult:
    record: RunRecord | None
    code: int
    error: str | None  # why there is no record (a run refused before it started, a crash)
    warm: bool  # it ran in a kernel an earlier run had used
    seconds: float
    slot: int


# ---------------------------------------------------------------- parent side


class Slot:
    """One worker process and the env of the kernel it keeps warm."""

    def __init__(self, project: Project, index: int, environ: dict[str, str], kind: str):
        self.project, self.index, self.environ, self.kind = project, index, environ, kind
        self.proc: subprocess.Popen | None = None
        self.env: str | None = None  # the env of its warm kernel, as far as we know
        self.busy = False
        self.interrupted = False

    @property
    def log_path(self) -> Path:
        return self.project.pool_log_path(self.index)

    def _start(self) -> subprocess.Popen:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            return spawn(
                [
                    sys.executable,
                    "-m",
                    "workbench.notebooks.pool",
                    self.project.root,
                    str(self.index),
                    self.kind,
                ],
                what=f"starting pool slot {self.index}",
                cwd=self.project.root,
                env={**self.project.jupyter_env(), **self.environ},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the pool, which interrupts once
                preexec_fn=die_with_parent,
            )

    def run(
        self, request: PoolRun, on_start: Callable[[str], None], hard_limit: float | None
    ) -> PoolResult:
        """Hand request to the worker and wait for its answer (killing the worker after
        hard_limit seconds: its own timeout should have ended the run long before)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
            self.env = None
        began = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(request.to_json()) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return self._crashed(None, began)
        started: str | None = None
        deadline = None if hard_limit is None else began + hard_limit
        for answer in self._answers(deadline):
            if answer.get("event") == "started":
                started = answer["id"]
                on_start(started)
                continue
            self.env = answer.get("env")
            record = RunRecord.from_json(answer["record"]) if answer.get("record") else None
            return PoolResult(
                record,
                answer.get("code", 1),
                answer.get("error"),
                bool(answer.get("warm")),
                time.monotonic() - began,
                self.index,
            )
        return self._crashed(started, began)

    def _answers(self, deadline: float | None) -> Iterator[dict]:
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self.kill()
                    return
                if not selector.select(timeout=None if left is None else min(left, 1.0)):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    return  # the worker died
                with contextlib.suppress(ValueError):
                    yield json.loads(line)

    def _crashed(self, run_id: str | None, began: float) -> PoolResult:
        """The worker died (or was killed) in the middle of a run: complete its record."""
        self.kill()
        why = f"the pool worker died (see {self.log_path})"
        record = None
        if run_id is not None:
            record = RunRecord.read(self.project.runs_dir / run_id / "record.json")
            if record is not None and record.ended is None:
                record.status = RunStatus.INTERRUPTED if self.interrupted else RunStatus.FAILED
                record.ended = time.time()
                record.seconds = round(record.ended - record.started, 3)
                record.error = {"ename": "WorkerDied", "evalue": why}
                record.save(self.project)
        code = INTERRUPTED if self.interrupted else 1
        return PoolResult(record, code, why, False, time.monotonic() - began, self.index)

    def interrupt(self) -> None:
        """Interrupt the run in hand (once): its record says interrupted."""
        if self.proc is not None and self.proc.poll() is None and not self.interrupted:
            self.interrupted = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc, self.env = None, None

    def stop(self) -> None:
        """End of input: the worker shuts its kernel down and exits."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None


class Pool:
    """Slots that take runs, a run going to a free slot whose kernel is of its env when
    there is one. environs: one dict of extra environment per slot (its GPUs)."""

    def __init__(self, project: Project, environs: list[dict[str, str]], kind: str):
        self.project = project
        self.slots = [Slot(project, i, environ, kind) for i, environ in enumerate(environs)]
        self.free = threading.Condition()
        self.stopping = False

    def _take(self, env: str | None) -> Slot:
        with self.free:
            while True:
                if self.stopping:
                    raise KeyboardInterrupt
                idle = [s for s in self.slots if not s.busy]
                if idle:
                    slot = next((s for s in idle if s.env == env), None) or next(
                        (s for s in idle if s.env is None), idle[0]
                    )
                    slot.busy = True
                    return slot
                self.free.wait()

    def _give_back(self, slot: Slot) -> None:
        with self.free:
            slot.busy = False
            self.free.notify_all()

    def run(
        self,
        request: PoolRun,
        on_start: Callable[[str], None] = lambda _id: None,
        hard_limit: float | None = None,
    ) -> PoolResult:
        """Run request in a slot (blocking until one is free); thread-safe."""
        slot = self._take(env_of(self.project, request))
        try:
            return slot.run(request, on_start, hard_limit)
        finally:
            self._give_back(slot)

    def interrupt(self) -> None:
        """Ctrl-C: no new runs; each running one is interrupted and recorded as such."""
        with self.free:
            self.stopping = True
            self.free.notify_all()
        for slot in self.slots:
            if slot.busy:
                slot.interrupt()

    def close(self) -> None:
        for slot in self.slots:
            slot.stop()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def env_of(project: Project, request: PoolRun) -> str | None:
    """The env a request runs in, for picking a warm slot (None when unclear)."""
    if request.env:
        return request.env
    from workbench.envs import kernels
    from workbench.notebooks.parameters import read

    try:
        name = (read(request.notebook).get("metadata", {}).get("kernelspec") or {}).get("name")
    except WorkbenchError:
        return None
    return kernels.env_of(project, name) if name else None


# ---------------------------------------------------------------- worker side


class WarmKernel:
    """A kernel of one env kept across runs, with the GPUs the env asks for (leased for
    as long as the kernel lives, unless the slot was given GPUs).

    Runs talk to it through one client that stays connected (a new client must wait for
    its IOPub subscription, on every run); the slot's own hidden calls (snapshot, chdir,
    restore) go through a second one with a session of its own, as clients sharing a
    session share a socket identity and the kernel answers only one of them."""

    def __init__(self, project: Project, env: str, kernel: str, holder: tuple[str, str]):
        from jupyter_client.asynchronous import AsyncKernelClient
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_client.session import Session
        from jupyter_core.utils import run_sync

        from workbench.envs import kernels
        from workbench.gpus import assign
        from workbench.gpus.leases import Holder

        class Client(AsyncKernelClient):
            """Ready once, then ready for every run (its channels stay connected)."""

            ready = False

            def start_channels(self, *args, **kwargs) -> None:
                if not self.channels_running:
                    AsyncKernelClient.start_channels(self, *args, **kwargs)

            async def wait_for_ready(self, timeout: float | None = None) -> None:
                if not self.ready:
                    await AsyncKernelClient.wait_for_ready(self, timeout)
                    self.ready = True

            def stop_channels(self) -> None:
                """nbclient's end of a run: the channels stay for the next one."""

            def close(self) -> None:
                AsyncKernelClient.stop_channels(self)

        class Manager(AsyncKernelManager):
            """Hands every run the same connected client."""

            client_factory = Client
            runs_client: Client | None = None

            def client(self, **kwargs):
                if self.runs_client is None:
                    self.runs_client = super().client(**kwargs)
                return self.runs_client

        self.env, self.runs, self.sync = env, 0, run_sync
        entry = project.env(env)
        kind, name = holder
        self.gpus = assign.assign(
            entry.gpus, entry.gpu_count, Holder(kind, name, str(project.root))
        )
        self.saved = {name: os.environ.get(name) for name in self.gpus.environ()}
        os.environ.update(self.gpus.environ())
        self.km = Manager(kernel_name=kernel)
        self.kc = None
        try:
            # History in memory: restoring starts a new history session after every run,
            # which on disk costs a database write and fills the user's history.
            run_sync(self.km.start_kernel)(
                cwd=str(project.root),
                extra_arguments=["--HistoryManager.hist_file=:memory:", *kernels.QUIET_KERNEL_ARGS],
            )
            session = Session(
                key=self.km.session.key, signature_scheme=self.km.session.signature_scheme
            )
            self.kc = AsyncKernelClient(**{**self.km.get_connection_info(), "session": session})
            self.kc.start_channels(iopub=False, stdin=False, hb=False)
            run_sync(self.kc.wait_for_ready)(timeout=120)
            self.hidden(f"{WARMKERNEL}.snapshot()")
        except BaseException:
            self.shutdown()
            raise

    def hidden(self, code: str) -> None:
        """Execute code in the kernel without a trace in its history or outputs."""

        async def call() -> dict:
            msg_id = self.kc.execute(code, silent=True, store_history=False)
            while True:
                reply = await self.kc.get_shell_msg(timeout=HIDDEN_TIMEOUT_S)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]

        content = self.sync(call)()
        if content.get("status") != "ok":
            raise WorkbenchError(f"warm kernel: {content.get('ename')}: {content.get('evalue')}")

    def alive(self) -> bool:
        return bool(self.sync(self.km.is_alive)())

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            if self.kc is not None:
                self.kc.stop_channels()
            if self.km.runs_client is not None:
                self.km.runs_client.close()
            if self.km.has_kernel:
                self.sync(self.km.shutdown_kernel)(now=True)
        self.gpus.release()
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Worker:
    def __init__(self, project: Project, holder: tuple[str, str], answer: Callable[[dict], None]):
        self.project, self.holder, self.answer = project, holder, answer
        self.kernel: WarmKernel | None = None

    def _kernel_for(self, request: PoolRun) -> tuple[WarmKernel, bool]:
        from workbench.notebooks import execution
        from workbench.notebooks.parameters import read

        env, kernel = execution.resolve_env(
            self.project, request.notebook, read(request.notebook), request.env
        )
        current = self.kernel
        if current is not None and current.env == env and current.alive():
            return current, True
        self.drop_kernel()
        self.kernel = WarmKernel(self.project, env, kernel, self.holder)
        return self.kernel, False

    def drop_kernel(self) -> None:
        if self.kernel is not None:
            self.kernel.shutdown()
            self.kernel = None

    def handle(self, request: PoolRun) -> None:
        from workbench.notebooks import execution

        try:
            kernel, warm = self._kernel_for(request)
            kernel.hidden(f"{WARMKERNEL}.chdir({str(request.notebook.parent)!r})")
            run = execution.RunRequest(
                notebook=request.notebook,
                parameters=request.parameters,
                preset=request.preset,
                env=request.env,
                timeout=request.timeout,
                sweep=request.sweep,
                on_start=lambda record: self.answer({"event": "started", "id": record.id}),
            )
            record, code = execution.execute(self.project, run, km=kernel.km)
        except WorkbenchError as exc:
            self.drop_kernel()
            self.answer({"event": "done", "error": exc.message, "code": exc.exit_code})
            return
        kernel.runs += 1
        if RunStatus(record.status) not in REUSABLE or not self._restored(kernel):
            self.drop_kernel()
        self.answer(
            {
                "event": "done",
                "record": record.to_json(),
                "code": code,
                "warm": warm,
                "env": self.kernel.env if self.kernel else None,
            }
        )
        if code == INTERRUPTED:
            raise KeyboardInterrupt

    def _restored(self, kernel: WarmKernel) -> bool:
        try:
            kernel.hidden(f"{WARMKERNEL}.restore()")
        except WorkbenchError:
            return False
        return kernel.alive()


def _interrupt_once(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the record short
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    from workbench import project as projects

    root, index, kind = Path(argv[0]), argv[1], argv[2]
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed (kernels, libraries) goes to the log, not the answers
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt_once)
    sys.modules.setdefault("rfc3987_syntax", None)  # as in workbench.cli: a slow import

    def answer(message: dict) -> None:
        answers.write(json.dumps(message, default=str) + "\n")

    worker = _Worker(projects.load(root), (kind, f"slot {index}"), answer)
    try:
        for line in sys.stdin:
            data = json.loads(line)
            worker.handle(PoolRun(**{**data, "notebook": Path(data["notebook"])}))
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        worker.drop_kernel()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
