"""The HTTP servers that run in envs (an app's runner, an engine's front): their listening
socket, uvicorn set up the same way, and an exit that threads cannot hold up."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable

from workbench.runtime import logs


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP; without it every first SSE chunk waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    return sock


def server(app, name: str, level: str, on_signal: Callable[[], None] = lambda: None):
    """A uvicorn server for app (call .run(sockets=[sock])): JSON logs, no server header,
    no websockets, in-flight requests cut after 3 s on shutdown (a client streaming must not
    hold a stop for 30 s). SIGTERM or SIGINT calls on_signal, then stops it gracefully,
    exiting 0; a second SIGINT forces it."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # uvicorn's own handler records the signal and re-raises it after shutdown (the
            # process then dies of SIGTERM, status -15); a graceful stop exits 0 instead.
            on_signal()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    config = uvicorn.Config(
        app,
        log_config=logs.config(name, level),
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
        lifespan="on",
        ws="none",
    )
    return Server(config)


def exit_soon(code: int, after: float = 2.0) -> None:
    """Exit with code after `after` seconds even if threads still run (a generation that
    ignores its stop event must not hold the exit)."""
    timer = threading.Timer(after, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
