"""Clients for measuring a served app: streams that speak Gradio's queue protocol as its
browser client does (POST /gradio_api/queue/join, then read /gradio_api/queue/data as
server-sent events), the app's token counter, percentiles.

Light enough that 32 of them in one asyncio process leave the CPU to the server under test
(gradio_client polls each job every millisecond from a thread of its own). Used by
bench/serving.py and tests/reliability/.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
import uuid


class Busy(Exception):
    """The app's queue is full (HTTP 503, "Queue is full..."): retry later."""


def fn_index(base_url: str, api_name: str) -> int:
    """The endpoint number Gradio's queue wants for api_name."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/config", timeout=10) as reply:
        deps = json.loads(reply.read())["dependencies"]
    return next(d["id"] for d in deps if d.get("api_name") == api_name)


async def stream(http, fn: int, data: list, session: str | None = None) -> dict:
    """One streamed call on an httpx.AsyncClient: time to first update, wall time, last text.

    `session` is the browser tab's session hash (a new one when not given). Raises Busy when
    the queue is full and RuntimeError with the app's message when the call fails."""
    session = session or uuid.uuid4().hex[:12]
    t0 = time.perf_counter()
    joined = await http.post(
        "/gradio_api/queue/join", json={"data": data, "fn_index": fn, "session_hash": session}
    )
    if joined.status_code == 503:
        raise Busy(joined.json().get("detail", "queue full"))
    joined.raise_for_status()
    first = None
    output: dict = {}
    async with http.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as r:
        async for line in r.aiter_lines():
            msg = json.loads(line[5:]) if line.startswith("data:") else {}
            if msg.get("msg") == "process_generating" and first is None:
                first = time.perf_counter()
            if msg.get("msg") == "process_completed":
                output = msg.get("output") or {}
                if not msg.get("success", True):
                    raise RuntimeError(output.get("error") or "the call failed")
                break
    done = time.perf_counter()
    text = (output.get("data") or [None])[0]
    return {"ttft": (first or done) - t0, "wall": done - t0, "text": text}


def tokens_total(base_url: str) -> float:
    """workbench_tokens_total from the app's /metrics: tokens generated since it started."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    m = re.search(r"^workbench_tokens_total\{[^}]*\} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def percentile(xs: list[float], q: float) -> float:
    """The nearest-rank q-th percentile."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]
