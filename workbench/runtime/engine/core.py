"""Engine-core processes: one model, its batching loop, and nothing of HTTP.

The engine's front (workbench.runtime.engine.commandline) starts one *zygote* with the env's
interpreter:

    python -m workbench.runtime.engine.core --fd N --model PATH --task TASK \
        [--handler FILE.py:Class] [--name NAME] [--threads 1] [--max-batch 32] \
        [--max-wait-ms 10]

File descriptor N is the zygote's end of a socketpair with the front. The zygote imports
torch and transformers and loads the weights (on the CPU; it never runs the model), says
"zygote", then forks one engine core per ("fork", worker, device) message; the message
carries the new core's own socket to the front as an SCM_RIGHTS file descriptor. A forked
core starts with everything imported and loaded, so a worker, a warm spare or a replacement
after a recycle is ready in a fraction of a second instead of the import floor of a new
process, and all of them share the zygote's weights in memory until they write to them.

A core moves the model to its device (a GPU named by `device`: CUDA is first touched after
the fork), warms it up (one padded batch through the same path requests take), says
"ready", then loops. A generating core takes what the front sent, admits waiting requests
(prefill), runs one step for every running request and sends the new tokens; a core of a
task that answers at once (embed, predict) runs the waiting requests as one batch when
waiting for more no longer pays (workbench.runtime.engine.adaptive). It reads its socket
in a thread of its own, and exits when told to ("exit": after its running requests have
finished) or when the front goes. Frames are described in workbench.runtime.engine.protocol.

A model that cannot load is reported to the front as ("fatal", message) and on stderr, and
the process exits with status 2.
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import ctypes
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time

from workbench.runtime import EXIT_USAGE, contract, logs
from workbench.runtime.engine import protocol
from workbench.runtime.engine.failures import Failure
from workbench.runtime.engine.settings import HANDLER, PIPELINE_TASKS, family

log = logging.getLogger("workbench.engine.core")

PREFILL_TOKENS_PER_STEP = 4096  # newcomers prefilled together before the next decode step


class Link:
    """A core's side of its socket: a reader thread queues what arrives (and when) and wakes
    the loop."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.inbox: collections.deque[tuple[float, tuple]] = collections.deque()
        self.wake = threading.Event()
        self.exiting = False
        self.gone = False
        self.send_lock = threading.Lock()

    def send(self, message: tuple) -> None:
        data = protocol.encode(message)
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.gone = True

    def start(self) -> None:
        threading.Thread(target=self._read, name="engine-core-reader", daemon=True).start()

    def _read(self) -> None:
        protocol.read_forever(self.sock, self._receive)
        self._receive(("gone",))

    def _receive(self, message: tuple) -> None:
        self.inbox.append((time.perf_counter(), message))
        self.wake.set()

    def wait(self, timeout: float | None = None) -> None:
        self.wake.wait(timeout)
        self.wake.clear()

    def drain(self) -> list[tuple]:
        return [message for _, message in self.drain_timed()]

    def drain_timed(self) -> list[tuple[float, tuple]]:
        """What arrived, with when (time.perf_counter() in the reader thread)."""
        messages = []
        while self.inbox:
            when, message = self.inbox.popleft()
            if message[0] == "exit":
                self.exiting = True
            elif message[0] == "gone":
                self.gone = True
            else:
                messages.append((when, message))
        return messages


def run_generate(link: Link, generator) -> None:
    pending: list[tuple] = []
    while not link.gone:
        for message in link.drain():
            if message[0] == "generate":
                pending.append(message[1:])
            elif message[0] == "cancel":
                rid = message[1]
                if not generator.cancel(rid):
                    pending[:] = [p for p in pending if p[0] != rid]
        if not generator.rows and not pending:
            if link.exiting:
                return
            link.wait()
            continue
        if pending and generator.room:
            batch, budget = [], PREFILL_TOKENS_PER_STEP
            while pending and len(batch) < generator.room:
                if batch and len(pending[0][1]) > budget:
                    break
                budget -= len(pending[0][1])
                batch.append(pending.pop(0))
            _guarded(link, generator, lambda b=batch: generator.admit(b), [b[0] for b in batch])
        if generator.rows:
            _guarded(link, generator, generator.step, [])


def _guarded(link: Link, generator, fn, newcomers: list[str]) -> None:
    """Run one admit or step and send its tokens; a failure fails every request in the
    batch (and the newcomers), not the process."""
    batch = len(generator.rows) + len(newcomers)
    try:
        outputs = fn()
    except Exception as exc:  # noqa: BLE001 - reported to the clients, the loop goes on
        log.exception("generation step failed")
        message = f"generation failed: {type(exc).__name__}: {exc}"
        for rid in generator.clear() + newcomers:
            link.send(("failed", rid, Failure.MODEL_ERROR.value, message))
        return
    link.send(("tokens", batch, outputs))


def run_batches(link: Link, task: str, runner, cork) -> None:
    """The loop of a task that answers at once (embed, predict): run the waiting requests
    as one batch when the adaptive cork says waiting no longer pays, then send each
    request's result or failure. runner.take(pending) picks a batch of (rid, inputs,
    params); runner.run(batch) gives ([(rid, result)], [(rid, code, message)])."""
    pending: list[tuple] = []  # (rid, inputs, params, arrived)
    while not link.gone:
        for when, message in link.drain_timed():
            if message[0] == task:
                pending.append((*message[1:4], when))
                cork.arrived(when, len(message[2]))
            elif message[0] == "cancel":
                pending[:] = [p for p in pending if p[0] != message[1]]
        if not pending:
            if link.exiting:
                return
            link.wait()
            continue
        inputs = sum(len(p[1]) for p in pending)
        delay = 0.0 if link.exiting else cork.wait(inputs, pending[0][3], time.perf_counter())
        if delay > 0:
            link.wait(delay)
            continue
        batch = [p[:3] for p in runner.take(pending)]
        link.send(("started", [p[0] for p in batch]))
        started = time.perf_counter()
        results, failures = runner.run(batch)
        seconds = time.perf_counter() - started
        size = sum(len(p[1]) for p in batch)
        cork.ran(size, seconds)
        link.send(("results", results, {"batch": size, "inference_s": seconds}))
        for failure in failures:
            link.send(("failed", *failure))


class EmbedRunner:
    """The embedder as run_batches takes it: a failing batch fails each of its requests."""

    def __init__(self, embedder):
        self.embedder = embedder

    def take(self, pending: list) -> list:
        return self.embedder.take(pending)

    def run(self, batch: list) -> tuple[list, list]:
        try:
            return self.embedder.run([(rid, inputs) for rid, inputs, _ in batch]), []
        except Exception as exc:  # noqa: BLE001 - reported to the clients, the loop goes on
            log.exception("embedding failed")
            message = f"embedding failed: {type(exc).__name__}: {exc}"
            return [], [(rid, Failure.MODEL_ERROR.value, message) for rid, _, _ in batch]


# -- the zygote ---------------------------------------------------------------------------
def load(args: argparse.Namespace):
    """The model on the CPU (CUDA is not touched before a fork), and what the front needs
    to know about it."""
    import torch

    torch.set_num_threads(max(1, args.threads))
    if family(args.task) == "predict":
        from workbench.runtime.engine import predict

        model = predict.load(args.task, args.model, args.handler)
        if not args.gpu:
            model.setup("cpu")  # once, in the zygote: every core shares the weights
        return model, {"task": args.task, **model.info}
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from workbench.runtime.engine import batching

    transformers_logging.disable_progress_bar()  # the log is JSON lines
    loader = AutoModelForCausalLM if args.task == "generate" else AutoModel
    dtype = "auto" if args.gpu else torch.float32
    model = loader.from_pretrained(args.model, dtype=dtype).eval()
    info = {
        "task": args.task,
        "model_type": getattr(model.config, "model_type", None),
        "context": batching.context_length(model.config),
    }
    if args.task == "generate":
        info["eos"] = sorted(batching.eos_ids(model))
    else:
        info["dim"] = int(getattr(model.config, "hidden_size", 0) or 0)
    return model, info


def zygote(control: socket.socket, args: argparse.Namespace) -> int:
    """Load once, then fork a core for every request, until the front goes."""
    started = time.monotonic()
    try:
        model, info = load(args)
    except Exception as exc:  # noqa: BLE001 - every failure to load ends the same way
        message = f"cannot load model {args.model}: {type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            control.sendall(protocol.encode(("fatal", message)))
        logs.fail(args.name, message, exc, kind="engine")
        return EXIT_USAGE
    info["load_s"] = round(time.monotonic() - started, 3)
    log.info("engine zygote loaded", extra={"fields": {"pid": os.getpid(), **info}})
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked cores are reaped by the kernel
    control.sendall(protocol.encode(("zygote", info)))
    decoder = protocol.Decoder()
    fds: collections.deque[int] = collections.deque()
    while True:
        try:
            data, ancillary, _flags, _addr = control.recvmsg(1 << 16, socket.CMSG_SPACE(64))
        except InterruptedError:
            continue
        if not data:
            return 0  # the front is gone
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        for message in decoder.feed(data):
            if message[0] == "fork":
                _, wid, device = message
                pid = os.fork()
                if pid == 0:
                    control.close()
                    os._exit(_core(fds.popleft(), model, info, args, wid, device))
                os.close(fds.popleft())
                control.sendall(protocol.encode(("forked", wid, pid)))


def _core(fd: int, model, info: dict, args: argparse.Namespace, wid: int, device) -> int:
    """A forked core: its device, warm-up, then the loop. Returns the exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    started = time.monotonic()
    link = Link(socket.socket(fileno=fd))
    try:
        engine = _prepare(model, info, args, device)
    except Exception as exc:  # noqa: BLE001
        message = f"worker {wid} cannot start: {type(exc).__name__}: {exc}"
        link.send(("fatal", message))
        logs.fail(args.name, message, exc, kind="engine")
        return EXIT_USAGE
    ready = {"pid": os.getpid(), "device": device or "cpu", **info}
    ready["ready_s"] = round(time.monotonic() - started, 3)
    log.info("engine core ready", extra={"fields": {"worker": wid, **ready}})
    link.start()
    link.send(("ready", ready))
    try:
        if args.task == "generate":
            run_generate(link, engine)
        else:
            from workbench.runtime.engine.adaptive import Cork

            cork = Cork(args.max_batch, args.max_wait_ms / 1000)
            run_batches(link, family(args.task), engine, cork)
    except Exception:  # noqa: BLE001 - a bug in the loop: log it, the front replaces us
        log.exception("engine core failed")
        return 1
    log.info("engine core stopped", extra={"fields": {"worker": wid}})
    return 0


def _prepare(model, info: dict, args: argparse.Namespace, device):
    import torch

    torch.set_num_threads(max(1, args.threads))
    if family(args.task) == "predict":
        from workbench.runtime.engine import predict

        if device is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            model.setup(predict.device_name(device))
        model.warm()
        return predict.Predictor(model, args.max_batch)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        model = model.to("cuda")
    if args.task == "generate":
        from workbench.runtime.engine import batching

        context = info["context"] or 1 << 20
        engine = batching.Generator(model, torch, args.max_batch, frozenset(info["eos"]), context)
        warm = {"max_tokens": 3, "temperature": 0.8, "top_k": 5, "top_p": 0.9}
        batch = [("warm-a", [1, 2, 3, 4], warm), ("warm-b", [5, 6], warm)]
        engine.admit(batch[: args.max_batch])  # a padded batch, where two fit
        while engine.rows:
            engine.step()
        return engine
    from workbench.runtime.engine.embedding import Embedder

    engine = Embedder(model, torch, args.max_batch)
    engine.run([("warm", [[1, 2, 3], [4, 5]])])
    return EmbedRunner(engine)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="the zygote's end of a socketpair")
    parser.add_argument("--model", required=True, help="the model folder")
    tasks = ("generate", "embed", HANDLER, *PIPELINE_TASKS)
    parser.add_argument("--task", choices=tasks, default="generate")
    parser.add_argument("--handler", default="", help="FILE.py:Class (task predict)")
    parser.add_argument("--name", default="engine", help="engine name (logs)")
    parser.add_argument("--gpu", action="store_true", help="cores run on GPUs (keep dtype)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per core")
    parser.add_argument("--max-batch", type=int, default=32, help="requests run together")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="most wait for a batch")
    level = contract.LOG_LEVEL
    parser.add_argument("--log-level", default=level.unparsed(), type=contract.log_level)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # torch.cuda.is_available() must not initialise CUDA here: forked cores could not use it
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when cores stop
    logging.config.dictConfig(logs.config(args.name, args.log_level.upper()))
    return zygote(socket.socket(fileno=args.fd), args)


if __name__ == "__main__":
    sys.exit(main())
