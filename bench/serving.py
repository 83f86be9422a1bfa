"""Serving overhead of the chat app (gradio_apps/chat.py behind workbench.runtime.app_runner).

Prints side by side, in one run (about 3 minutes on 2 cores):
  cold start: runner start -> port answers (503) -> /healthz 200       (goal <= 4 s)
  tok/s: raw in-process `generate` vs streamed through the app with gradio_client,
         end to end (submit -> last update) and decode only (first -> last token)
                                                                        (goal ratio >= 0.9)
  time to first token: raw vs streamed; the difference is the serving overhead
                                                                        (goal <= 30 ms)
  batching: aggregate tok/s with 8 concurrent streaming clients / one client  (goal >= 3x)
            and p50/p99 time to first token at 1, 8 and 32 concurrent clients

Raw and streamed trials alternate so that background load hits both alike. Token counts of
streamed requests come from the app's /metrics (workbench_tokens_total), so they are exact.
Uses models/tiny-gpt when present, else trains one with the notebook's smoke preset.

    .venv/bin/python bench/serving.py [--trials 8] [--tokens 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import sse_clients

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".workbench" / "envs" / "textgen" / "bin" / "python"
RUNNER = ("-m", "workbench.runtime.app_runner")  # run by the env's interpreter
APP = REPO / "gradio_apps" / "chat.py"
PROMPT = "The try statement"

RAW_WORKER = r"""
import json, os, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer
torch.set_num_threads(int(os.environ.get("WORKBENCH_TORCH_THREADS", "1")))
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

class FirstToken(BaseStreamer):
    def __init__(self): self.n = 0; self.first = None
    def put(self, v):
        self.n += 1
        if self.n == 2: self.first = time.perf_counter()
    def end(self): pass

print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    ids = tok(req["prompt"], return_tensors="pt")["input_ids"]
    s = FirstToken()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=req["tokens"], do_sample=True, temperature=0.8,
                             top_k=50, pad_token_id=pad, streamer=s)
    t1 = time.perf_counter()
    n = out.shape[1] - ids.shape[1]
    print(json.dumps({"tokens": n, "wall": t1 - t0, "ttft": s.first - t0,
                      "decode": t1 - s.first}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stream_once(client, tokens: int) -> dict:
    t0 = time.perf_counter()
    job = client.submit(PROMPT, tokens, 0.8, 50, api_name="/generate")
    first = last = None
    for _ in job:
        now = time.perf_counter()
        first = first or now
        last = now
    job.result()
    done = time.perf_counter()
    return {"ttft": first - t0, "decode": last - first, "wall": done - t0}


CLIENT_TIERS = ((1, 6), (8, 3), (32, 2))  # (concurrent clients, rounds)


def sse_once(port: int, fn: int, tokens: int) -> dict:
    """The request over plain HTTP + SSE (no gradio_client): the server's own overhead."""
    import asyncio

    import httpx

    async def run() -> dict:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            return await sse_clients.stream(http, fn, [PROMPT, tokens, 0.8, 50])

    return asyncio.run(run())


def concurrent(port: int, fn_index: int, n: int, tokens: int, rounds: int) -> dict:
    """n streaming clients start together each round; tokens counted by the app.

    The clients are asyncio SSE streams in this one process (what the browser client
    speaks): n gradio_client threads would spend more of the same 2 cores than the server.
    """
    import asyncio

    import httpx

    async def run() -> dict:
        limits = httpx.Limits(max_connections=2 * n + 4)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
            ttfts: list[float] = []
            errors: list[str] = []
            wall = total = 0.0
            for _ in range(rounds):
                before = sse_clients.tokens_total(url)
                t0 = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        sse_clients.stream(http, fn_index, [PROMPT, tokens, 0.8, 50])
                        for _ in range(n)
                    ),
                    return_exceptions=True,
                )
                wall += time.perf_counter() - t0
                total += sse_clients.tokens_total(url) - before
                ttfts += [r["ttft"] for r in results if isinstance(r, dict)]
                errors += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]
            return {"rate": total / wall, "ttfts": ttfts, "errors": errors}

    return asyncio.run(run())


def med(xs) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=120)
    args = ap.parse_args()
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="wb-bench-serving-") as tmp:
        tmp = Path(tmp)
        model = REPO / "models" / "tiny-gpt"
        if not (model / "config.json").is_file():
            # The project's own training notebook, fast: its smoke preset, written to tmp.
            model = tmp / "tiny-gpt"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "workbench",
                    "run",
                    "notebooks/train_tiny_gpt.ipynb",
                    "--preset",
                    "smoke",
                    "-p",
                    "out_dir",
                    str(model),
                ],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
        cfg = json.loads((model / "config.json").read_text())
        tokens = min(args.tokens, int(cfg.get("n_positions", 1024)) - 8)
        print(
            f"model: {model} ({cfg.get('n_layer')} layers, n_embd {cfg.get('n_embd')}); "
            f"{tokens} new tokens per request; torch threads per generation: "
            f"{os.environ.get('WORKBENCH_TORCH_THREADS', '1')}"
        )

        port = free_port()
        base = f"http://127.0.0.1:{port}/"
        env = {**os.environ, "WORKBENCH_MODEL": str(model), "WORKBENCH_PROJECT": str(REPO)}
        env.pop("WORKBENCH_APP_AUTH", None)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                str(PYTHON),
                *RUNNER,
                "--app",
                str(APP),
                "--name",
                "chat",
                "--port",
                str(port),
                "--root",
                str(REPO),
                "--state-dir",
                str(tmp / "state"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        raw = subprocess.Popen(
            [str(PYTHON), "-c", RAW_WORKER, str(model)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            port_s = healthy_s = None
            while time.perf_counter() - t0 < 90:
                if proc.poll() is not None:
                    print(proc.stderr.read(), file=sys.stderr)
                    return 1
                try:
                    code, body = http_get(base + "healthz", timeout=1)
                except OSError:
                    code = None
                if code and port_s is None:
                    port_s = time.perf_counter() - t0
                if code == 200:
                    healthy_s = time.perf_counter() - t0
                    ready = json.loads(body).get("ready_s")
                    break
                time.sleep(0.02)
            assert healthy_s is not None, "app never became healthy"
            assert raw.stdout.readline().strip() == "ready"

            def raw_once() -> dict:
                raw.stdin.write(json.dumps({"prompt": PROMPT, "tokens": tokens}) + "\n")
                raw.stdin.flush()
                return json.loads(raw.stdout.readline())

            client = Client(base, verbose=False)
            raw_once()
            stream_once(client, tokens)  # warm both paths
            fn_index = sse_clients.fn_index(base, "generate")
            sse_once(port, fn_index, tokens)
            raws, streams, sses = [], [], []
            for _ in range(args.trials):
                raws.append(raw_once())
                before = sse_clients.tokens_total(base)
                s = sse_once(port, fn_index, tokens)
                s["tokens"] = sse_clients.tokens_total(base) - before
                sses.append(s)
                before = sse_clients.tokens_total(base)
                s = stream_once(client, tokens)
                s["tokens"] = sse_clients.tokens_total(base) - before
                streams.append(s)
            raw.stdin.close()
            raw.wait(timeout=10)

            # Batching: N concurrent clients, each streaming one request per round.
            tiers = {n: concurrent(port, fn_index, n, tokens, rounds) for n, rounds in CLIENT_TIERS}
        finally:
            for p in (proc, raw):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in (proc, raw):
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    raw_e2e = med([r["tokens"] / r["wall"] for r in raws])
    str_e2e = med([s["tokens"] / s["wall"] for s in streams])
    raw_dec = med([(r["tokens"] - 1) / r["decode"] for r in raws])
    str_dec = med([(s["tokens"] - 1) / s["decode"] for s in streams if s["decode"] > 0])
    raw_ttft = med([r["ttft"] for r in raws]) * 1000
    str_ttft = med([s["ttft"] for s in streams]) * 1000
    sse_e2e = med([s["tokens"] / s["wall"] for s in sses])
    sse_ttft = med([s["ttft"] for s in sses]) * 1000
    print()
    print(f"{'':38}{'raw':>10}{'streamed':>10}{'ratio':>8}   goal")
    print(
        f"{'tok/s end to end (median)':38}{raw_e2e:10.1f}{str_e2e:10.1f}"
        f"{str_e2e / raw_e2e:8.2f}   >= 0.9"
    )
    print(
        f"{'tok/s decode, first..last token':38}{raw_dec:10.1f}{str_dec:10.1f}"
        f"{str_dec / raw_dec:8.2f}   >= 0.9"
    )
    print(
        f"{'time to first token, ms (median)':38}{raw_ttft:10.1f}{str_ttft:10.1f}"
        f"{'':8}   overhead {str_ttft - raw_ttft:.1f} ms (goal <= 30)"
    )
    print(
        f"{'  same over plain HTTP+SSE (httpx)':38}{'':10}{sse_e2e:10.1f}"
        f"{sse_e2e / raw_e2e:8.2f}   tok/s end to end"
    )
    print(
        f"{'  same over plain HTTP+SSE (httpx)':38}{'':10}{sse_ttft:10.1f}"
        f"{'':8}   TTFT overhead {sse_ttft - raw_ttft:.1f} ms (server side)"
    )
    print(
        f"cold start: port answers {port_s:.2f} s, /healthz 200 after {healthy_s:.2f} s "
        f"(runner says ready at {ready} s; goal <= 4 s)"
    )
    single = tiers[1]["rate"]
    print()
    print(f"{'concurrent streaming clients':30}{'tok/s':>9}{'vs 1':>7}{'TTFT p50':>10}{'p99':>8}")
    for n, tier in tiers.items():
        errs = f"   {len(tier['errors'])} errors: {tier['errors'][0]}" if tier["errors"] else ""
        p50, p99 = (sse_clients.percentile(tier["ttfts"], q) * 1000 for q in (50, 99))
        print(
            f"{n:>28}  {tier['rate']:9.1f}{tier['rate'] / single:6.2f}x{p50:8.0f}ms{p99:6.0f}ms"
            + errs
        )
    print(f"batching: 8 clients / 1 client = {tiers[8]['rate'] / single:.2f}x (goal >= 3x)")
    print(
        f"trials: {args.trials} alternating raw/streamed; load average now "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
