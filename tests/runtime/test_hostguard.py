"""The app's host guard behind Lab's proxy: a request forwarded with X-Forwarded-Prefix is
seen as mounted at that prefix (root_path, path, public Host) once the Host check passed;
without the header, or with a foreign Host, nothing changes."""

import asyncio

from workbench.runtime.hostguard import HostGuard, behind_prefix

PREFIX = b"/workbench/proxy/chat"


def scope(path: str, *headers: tuple[bytes, bytes]) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "headers": list(headers),
    }


def test_forwarded_request_is_mounted_at_its_prefix() -> None:
    forwarded = scope(
        "/config",
        (b"host", b"127.0.0.1:7860"),
        (b"x-forwarded-host", b"localhost:8888"),
        (b"x-forwarded-prefix", PREFIX),
    )
    moved = behind_prefix(forwarded)
    assert moved["root_path"] == PREFIX.decode()
    assert moved["path"] == "/workbench/proxy/chat/config"
    assert moved["raw_path"] == b"/workbench/proxy/chat/config"
    assert dict(moved["headers"]) == {b"host": b"localhost:8888"}


def test_plain_request_is_unchanged() -> None:
    plain = scope("/config", (b"host", b"127.0.0.1:7860"))
    assert behind_prefix(plain) is plain


def test_prefix_needs_the_host_check_first() -> None:
    seen = []

    async def app(scope, receive, send):
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = HostGuard(
        app,
        port=7860,
        hosts=frozenset({"127.0.0.1"}),
        ready=lambda: True,
        status=dict,
        proxied=True,
    )
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    foreign = scope("/", (b"host", b"evil.example:7860"), (b"x-forwarded-prefix", PREFIX))
    asyncio.run(guard(foreign, receive, send))
    assert sent[0]["status"] == 400 and not seen
    forwarded = scope("/", (b"host", b"127.0.0.1:7860"), (b"x-forwarded-prefix", PREFIX))
    asyncio.run(guard(forwarded, receive, send))
    assert seen[0]["root_path"] == PREFIX.decode()
