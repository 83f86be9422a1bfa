"""<base_url>workbench/proxy/NAME/PATH: a running engine or app through Lab's own port and
behind Lab's auth (jupyter-server-proxy's handler: websockets refused without the token,
text/event-stream streamed chunk by chunk). The app sees Host 127.0.0.1:PORT (what its host
guard accepts) and the public host and prefix in X-Forwarded-Host / X-Forwarded-Prefix,
which the runtime's host guard turns into the request's root_path."""

import asyncio
import time

from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web

from workbench import project as projects
from workbench.serving import services

PORT_TTL = 5.0  # seconds a name's port is remembered: a page load asks for dozens of files


class ServiceProxy(ProxyHandler):
    ports: dict[tuple[str, str], tuple[float, int, str]] = {}  # (seen, port, kind)

    def initialize(self, project) -> None:
        self.project_root = project

    def _get_context_path(self, host: str, port: int) -> str:
        return url_path_join(self.base_url, "workbench", "proxy", self.service)

    def get_request_headers_override(self) -> dict:
        return {
            "Host": f"127.0.0.1:{self.port}",
            "X-Forwarded-Host": self.request.host,
            "X-Forwarded-Proto": self.request.protocol,
        }

    def _resolve(self, name: str) -> tuple[int, str]:
        if self.project_root is None:
            raise web.HTTPError(404, reason="Lab's root folder is not in a workbench project")
        service = services.running(projects.load(self.project_root), name)
        if service is None or service.kind == "lab" or not service.port:
            raise web.HTTPError(404, reason=f"no engine or app '{name}' is running")
        return service.port, service.kind

    async def _target(self, name: str, path: str | None) -> int:
        if path is None:  # NAME without its slash: relative links need it
            self.redirect(self.request.uri.replace(f"/{name}", f"/{name}/", 1).replace("//", "/"))
            return 0
        self.service = name
        key = (str(self.project_root), name)
        cached = self.ports.get(key)
        if cached and time.monotonic() - cached[0] < PORT_TTL:
            _seen, self.port, self.kind = cached
        else:
            self.port, self.kind = await asyncio.to_thread(self._resolve, name)  # probes health
            self.ports[key] = (time.monotonic(), self.port, self.kind)
        return self.port

    async def _proxy_buffered(self, host, port, proxied_path, body, client):
        """jupyter-server-proxy streams only when the request's Accept is exactly
        text/event-stream; an OpenAI client asks an engine for a stream in its JSON body and
        accepts application/json, so every engine answer, and every request that accepts an
        event stream among other types, is passed on as its chunks arrive."""
        if self.kind == "engine" or "text/event-stream" in self.request.headers.get("Accept", ""):
            return await self._proxy_progressive(host, port, proxied_path, body, client)
        return await super()._proxy_buffered(host, port, proxied_path, body, client)

    async def http_get(self, name: str, path: str | None) -> None:
        if await self._target(name, path):
            await self.proxy("127.0.0.1", self.port, path)

    async def open(self, name: str, path: str | None) -> None:
        if await self._target(name, path or "/"):
            await self.proxy_open("127.0.0.1", self.port, path or "/")

    async def post(self, name: str, path: str | None) -> None:
        if await self._target(name, path):
            await self.proxy("127.0.0.1", self.port, path)

    put = delete = patch = options = head = post


def handlers(base_url: str, project) -> list:
    pattern = url_path_join(base_url, "workbench", "proxy", r"([^/]+)") + r"(/.*)?"
    return [(pattern, ServiceProxy, {"project": project, "host_allowlist": ["127.0.0.1"]})]
