"""An engine-core process: one model, its batching loop, and nothing of HTTP.

Started by the engine's front (workbench.runtime.engine.server) with the env's interpreter:

    python -m workbench.runtime.engine.core --fd N --model PATH --task generate|embed \
        [--name NAME] [--worker ID] [--device cpu|cuda] [--threads 1] [--max-batch 32]

File descriptor N is this core's end of a socketpair with the front; frames are described in
workbench.runtime.engine.protocol. The core loads the model, warms it up (one padded batch
through the same code path requests take), says "ready", then loops: take what the front
sent, admit waiting requests (prefill), run one step for every running request, send the new
tokens. It never blocks the loop on the socket's reader, which is a thread of its own, and it
exits when told to ("exit": after the requests it runs have finished) or when the front goes.

A model that cannot load is reported to the front as ("fatal", message) and on stderr, and
the process exits with status 2.
"""

from __future__ import annotations

import argparse
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

from workbench.runtime import EXIT_USAGE, logs
from workbench.runtime.engine import protocol

log = logging.getLogger("workbench.engine.core")

PREFILL_TOKENS_PER_STEP = 4096  # newcomers prefilled together before the next decode step


class Core:
    def __init__(self, sock: socket.socket, args: argparse.Namespace):
        self.sock, self.args = sock, args
        self.inbox: collections.deque[tuple] = collections.deque()
        self.wake = threading.Event()
        self.exiting = False
        self.gone = False
        self.send_lock = threading.Lock()

    # -- I/O --------------------------------------------------------------------------------
    def send(self, message: tuple) -> None:
        data = protocol.encode(message)
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.gone = True

    def receive(self, message: tuple) -> None:
        """Reader thread: queue the message and wake the loop."""
        self.inbox.append(message)
        self.wake.set()

    def read(self) -> None:
        protocol.read_forever(self.sock, self.receive)
        self.receive(("gone",))

    def wait(self) -> None:
        self.wake.wait()
        self.wake.clear()

    # -- loops ------------------------------------------------------------------------------
    def run_generate(self, generator) -> None:
        pending: list[tuple] = []
        while not self.gone:
            for message in self._drain():
                if message[0] == "generate":
                    pending.append(message[1:])
                elif message[0] == "cancel":
                    rid = message[1]
                    if not generator.cancel(rid):
                        pending[:] = [p for p in pending if p[0] != rid]
            if not generator.rows and not pending:
                if self.exiting:
                    return
                self.wait()
                continue
            if pending and generator.room:
                batch, budget = [], PREFILL_TOKENS_PER_STEP
                while pending and len(batch) < generator.room:
                    if batch and len(pending[0][1]) > budget:
                        break
                    budget -= len(pending[0][1])
                    batch.append(pending.pop(0))
                self._guarded(generator, lambda b=batch: generator.admit(b), [b[0] for b in batch])
            if generator.rows:
                self._guarded(generator, generator.step, [])

    def _guarded(self, generator, fn, newcomers: list[str]) -> None:
        """Run one admit or step and send its tokens; a failure fails every request in the
        batch (and the newcomers), not the process."""
        batch = len(generator.rows) + len(newcomers)
        try:
            outputs = fn()
        except Exception as exc:  # noqa: BLE001 - reported to the clients, the loop goes on
            log.exception("generation step failed")
            message = f"generation failed: {type(exc).__name__}: {exc}"
            for rid in generator.clear() + newcomers:
                self.send(("failed", rid, message))
            return
        self.send(("tokens", batch, outputs))

    def run_embed(self, embedder) -> None:
        pending: list[tuple] = []
        while not self.gone:
            for message in self._drain():
                if message[0] == "embed":
                    pending.append(message[1:])
                elif message[0] == "cancel":
                    pending[:] = [p for p in pending if p[0] != message[1]]
            if not pending:
                if self.exiting:
                    return
                self.wait()
                continue
            batch = embedder.take(pending)
            try:
                results = embedder.run(batch)
            except Exception as exc:  # noqa: BLE001
                log.exception("embedding failed")
                for rid, _ in batch:
                    self.send(("failed", rid, f"embedding failed: {type(exc).__name__}: {exc}"))
                continue
            self.send(("embeddings", results))

    def _drain(self) -> list[tuple]:
        messages = []
        while self.inbox:
            message = self.inbox.popleft()
            if message[0] == "exit":
                self.exiting = True
            elif message[0] == "gone":
                self.gone = True
            else:
                messages.append(message)
        return messages


def load(args: argparse.Namespace):
    """The model, ready on its device, and what the front needs to know about it."""
    import torch

    torch.set_num_threads(max(1, args.threads))
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the log is JSON lines
    from workbench.runtime.engine import batching

    device = "cuda" if args.device == "cuda" else "cpu"
    dtype = "auto" if device == "cuda" else torch.float32
    loader = AutoModelForCausalLM if args.task == "generate" else AutoModel
    model = loader.from_pretrained(args.model, dtype=dtype).to(device).eval()
    info = {
        "pid": os.getpid(),
        "task": args.task,
        "device": device,
        "model_type": getattr(model.config, "model_type", None),
        "context": batching.context_length(model.config),
    }
    if args.task == "generate":
        context = info["context"] or 1 << 20
        engine = batching.Generator(model, torch, args.max_batch, batching.eos_ids(model), context)
        warm = [("warm-a", [1, 2, 3, 4], _warm_params()), ("warm-b", [5, 6], _warm_params())]
        engine.admit(warm)
        while engine.rows:
            engine.step()
        info["eos"] = sorted(engine.eos)
    else:
        from workbench.runtime.engine.embedding import Embedder

        engine = Embedder(model, torch, args.max_batch)
        engine.run([("warm", [[1, 2, 3], [4, 5]])])
        info["dim"] = int(getattr(model.config, "hidden_size", 0) or 0)
    return engine, info


def _warm_params() -> dict:
    return {"max_tokens": 3, "temperature": 0.8, "top_k": 5, "top_p": 0.9}


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="this core's end of the socketpair")
    parser.add_argument("--model", required=True, help="the model folder")
    parser.add_argument("--task", choices=("generate", "embed"), default="generate")
    parser.add_argument("--name", default="engine", help="engine name (logs)")
    parser.add_argument("--worker", default="0", help="worker id (logs)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--max-batch", type=int, default=32, help="requests run together")
    parser.add_argument("--log-level", default=os.environ.get("WORKBENCH_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = _arguments(argv)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front decides when cores stop
    logging.config.dictConfig(logs.config(args.name, args.log_level.upper()))
    sock = socket.socket(fileno=args.fd)
    core = Core(sock, args)
    try:
        engine, info = load(args)
    except Exception as exc:  # noqa: BLE001 - every failure to load ends the same way
        message = f"cannot load model {args.model}: {type(exc).__name__}: {exc}"
        core.send(("fatal", message))
        logs.fail(args.name, message, exc, kind="engine")
        return EXIT_USAGE
    info["ready_s"] = round(time.monotonic() - started, 3)
    fields = {"worker": args.worker, **info}
    log.info("engine core ready", extra={"fields": fields})
    threading.Thread(target=core.read, name="engine-core-reader", daemon=True).start()
    core.send(("ready", info))
    if args.task == "generate":
        core.run_generate(engine)
    else:
        core.run_embed(engine)
    log.info("engine core stopped", extra={"fields": {"worker": args.worker}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
