"""The ASGI layer in front of every app: Host header check, 503 while starting, access log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from workbench.runtime import LOOPBACK_HOSTS, contract

access = logging.getLogger("workbench.access")

ALWAYS_OPEN = ("/healthz", "/metrics")


def allowed_hosts(bind_host: str) -> frozenset[str] | None:
    """Host header values a server bound to bind_host accepts: loopback names (plus
    WORKBENCH_ALLOWED_HOSTS) on loopback, which stops DNS rebinding; None (any) elsewhere,
    where auth protects the server instead."""
    if bind_host not in LOOPBACK_HOSTS:
        return None
    extra = contract.ALLOWED_HOSTS.get() or []
    return (LOOPBACK_HOSTS - {"::1"}) | {h.lower() for h in extra}


def split_host(value: str) -> tuple[str, str | None]:
    """A Host header as (host, port or None): "[::1]:7860" -> ("[::1]", "7860")."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1 :]
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() else (value, None)


class HostGuard:
    """Wraps an ASGI app: refuses requests whose Host header names another server (400,
    or close 1008 for a websocket), answers 503 with status() as JSON on every path but
    /healthz and /metrics until ready(), and logs each HTTP request as one JSON line."""

    def __init__(
        self,
        app: Callable,
        *,
        port: int,
        hosts: frozenset[str] | None,
        ready: Callable[[], bool],
        status: Callable[[], dict],
        proxied: bool = False,
    ) -> None:
        self.app, self.port, self.hosts = app, port, hosts
        self.ready, self.status, self.proxied = ready, status, proxied

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if not self._host_allowed(scope):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _respond(send, 400, b"Invalid host header", b"text/plain")
        if self.proxied:
            scope = behind_prefix(scope)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if not self.ready() and path not in ALWAYS_OPEN:
            body = json.dumps(self.status()).encode()
            return await _respond(send, 503, body, b"application/json")
        await self._logged(scope, receive, send, path)

    def _host_allowed(self, scope: dict) -> bool:
        if self.hosts is None:
            return True
        header = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), ""
        )
        host, port = split_host(header)
        if host in self.hosts and port in (None, str(self.port)):
            return True
        access.warning(
            "rejected request with foreign Host header",
            extra={"fields": {"host": header[:200], "path": scope.get("path")}},
        )
        return False

    async def _logged(self, scope: dict, receive: Callable, send: Callable, path: str) -> None:
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            level = logging.DEBUG if path in ALWAYS_OPEN else logging.INFO
            if access.isEnabledFor(level):
                client = scope.get("client") or ("", 0)
                fields = {
                    "client": f"{client[0]}:{client[1]}",
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                }
                access.log(level, f"{scope['method']} {path} {status}", extra={"fields": fields})


def behind_prefix(scope: dict) -> dict:
    """A request that Lab's proxy forwarded (X-Forwarded-Prefix: /workbench/proxy/NAME, the
    public host in X-Forwarded-Host) as if the app were mounted at that prefix: root_path is
    the prefix, path carries it, Host is the public one. Then the URLs Gradio writes into its
    page, queue and SSE stream lead back through the proxy; without the header (the plain
    port) nothing changes. Called after the Host check, which saw the proxy's own Host."""
    headers = scope.get("headers") or []
    found = {k: v for k, v in headers if k in (b"x-forwarded-prefix", b"x-forwarded-host")}
    prefix = found.get(b"x-forwarded-prefix", b"").decode("latin-1").rstrip("/")
    if not prefix.startswith("/") or scope.get("path", "").startswith(prefix + "/"):
        return scope
    kept = [(k, v) for k, v in headers if k not in found and k != b"host"]
    host = found.get(b"x-forwarded-host") or next((v for k, v in headers if k == b"host"), b"")
    path = prefix + scope.get("path", "")
    raw = prefix.encode("latin-1") + scope.get("raw_path", b"") if "raw_path" in scope else None
    moved = dict(scope, root_path=prefix, path=path, headers=[*kept, (b"host", host)])
    if raw is not None:
        moved["raw_path"] = raw
    return moved


async def _respond(send: Callable, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
