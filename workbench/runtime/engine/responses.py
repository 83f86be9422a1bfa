"""Writing HTTP responses through ASGI's send: whole JSON bodies and server-sent chunks."""

from __future__ import annotations

import json

JSON = b"application/json"


async def respond(send, status: int, body: bytes, content_type: bytes, headers=()) -> None:
    head = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def json_response(send, status: int, body: dict) -> None:
    await respond(send, status, json.dumps(body).encode(), JSON)


async def chunk(send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
