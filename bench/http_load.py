"""A closed-loop HTTP load generator light enough to leave the CPU to the server under test:
N clients, each on its own keep-alive connection, send one request after another for a
fixed time (bounded by a request count), over plain asyncio streams (a general client
spends more per request than a small model does on this machine).

Used by bench/predict.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                data += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


@dataclass
class Tier:
    """What n clients got: every latency (s), the wall time, the errors, and the CPU time
    the load generator itself spent (its share of a small machine)."""

    clients: int
    seconds: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000 if self.latencies else math.nan


async def closed_loop(
    port: int,
    path: str,
    requests: list[tuple[bytes, Callable[[object], bool]]],
    clients: int,
    seconds: float,
    max_requests: int,
) -> Tier:
    """n clients send requests[i % len] back to back until `seconds` pass or
    `max_requests` have been sent; each answer is checked (a wrong one is an error, so
    batch-mates' answers cannot be mixed up unseen)."""
    tier = Tier(clients)
    sent = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal sent
        conn = Connection(port)
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                body, check = requests[sent % len(requests)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    status, data = await conn.post(path, body)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    tier.errors.append(f"{type(exc).__name__}: {exc}")
                    await conn.close()
                    continue
                took = time.perf_counter() - t0
                try:
                    right = status == 200 and check(json.loads(data))
                except (ValueError, LookupError, TypeError):
                    right = False
                if status != 200:
                    tier.errors.append(f"HTTP {status}: {data[:160].decode(errors='replace')}")
                elif not right:
                    tier.errors.append(f"wrong answer: {data[:160].decode(errors='replace')}")
                else:
                    tier.latencies.append(took)
        finally:
            await conn.close()

    t0, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    tier.seconds = time.perf_counter() - t0
    tier.client_cpu = time.process_time() - cpu
    return tier


def percentile(xs: list[float], q: float) -> float:
    """The nearest-rank q-th percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]
