"""An engine on Ray Serve against the same engine on this server, side by side in one run.

In a throwaway project (the textgen env from the repo's lock, a tiny random GPT-2), prints:
  start:     `workbench up tinygpt` here (supervisor, one engine) to healthy, against
             `workbench up tinygpt --cluster ADDRESS --replicas 2` to healthy (two replicas,
             each an engine subprocess of a Serve replica), and the cluster's own start
  memory:    PSS of the cluster's processes before and after the deployment
  TTFT:      time to the first streamed token with the official `openai` client, direct to
             the local engine, direct to a replica's engine, and through Serve's proxy
             (median and p90 of TRIALS, trials alternating so load hits each alike)
  spread:    8 concurrent streams through Serve: requests per replica, tok/s beside the same
             8 streams to the one local engine (on this 2-core machine two replicas share
             the same cores, so this measures the cost of the hops, not a gain)

    .venv/bin/python bench/cluster_serving.py [--trials 20]

Needs the [ray] extra (make ray-deps) and the repo's textgen env (make demo, or the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.projects import build_tiny_gpt  # noqa: E402 - the tests' tiny random GPT-2

TEXTGEN = REPO / ".workbench" / "envs" / "textgen" / "bin" / "python"
KEY = "sk-bench-" + os.urandom(6).hex()
PROMPT = "The try statement"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wb(root: Path, *args: str) -> dict | list:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", *args, "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "WORKBENCH_API_KEYS": KEY},
    )
    if proc.returncode != 0:
        sys.exit(f"workbench {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)["data"]


def timed(root: Path, *args: str) -> tuple[float, dict | list]:
    began = time.perf_counter()
    data = wb(root, *args)
    return time.perf_counter() - began, data


def ttft(url: str, model: str, tokens: int = 16) -> float:
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    began = time.perf_counter()
    first = None
    for chunk in client.completions.create(
        model=model, prompt=PROMPT, max_tokens=tokens, temperature=0, stream=True
    ):
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - began
    return first


async def concurrent(url: str, model: str, streams: int, tokens: int) -> tuple[float, int]:
    """(seconds, completion tokens) of `streams` streamed completions at once."""
    client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)

    async def one() -> int:
        got = 0
        stream = await client.completions.create(
            model=model,
            prompt=PROMPT,
            max_tokens=tokens,
            temperature=0.8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if chunk.usage:
                got = chunk.usage.completion_tokens
        return got

    began = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(streams)))
    await client.close()
    return time.perf_counter() - began, sum(counts)


def per_replica(base: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(base + "/metrics", timeout=30).text.splitlines():
        if line.startswith("workbench_engine_requests_total{") and "/v1/completions" in line:
            replica = line.split('replica="', 1)[1].split('"', 1)[0]
            counts[replica] = counts.get(replica, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def stats(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values) * 1000:6.1f} ms, p90 {p90 * 1000:6.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    if not TEXTGEN.exists():
        sys.exit(f"{TEXTGEN} missing: build the repo's envs first (make demo)")
    with tempfile.TemporaryDirectory(prefix="wb-bench-serve-") as tmp:
        root = Path(tmp) / "proj"
        (root / "envs").mkdir(parents=True)
        for name in ("textgen.yml", "textgen.lock"):
            shutil.copy(REPO / "envs" / name, root / "envs" / name)
        engine = 'env = "textgen"\nmodel = "models/tiny-gpt"\nport = {port}\n'
        (root / "workbench.toml").write_text(
            '[project]\nname = "benchserve"\n[envs.textgen]\n'
            f"[engines.tinygpt]\n{engine.format(port=free_port())}"
            f"[engines.here]\n{engine.format(port=free_port())}"
        )
        build_tiny_gpt(root / "models" / "tiny-gpt")
        wb(root, "env", "create", "textgen", "--locked")
        try:
            local_up, listed = timed(root, "up", "here")
            here = next(s for s in listed if s["name"] == "here")["url"]
            cluster_up, cluster = timed(
                root, "cluster", "up", "--nodes", "2", "--gpus-per-node", "1",
                "--cpus-per-node", "4", "--object-store-mb", "300",
            )  # fmt: skip
            idle_mb = wb(root, "cluster", "status")["memory_mb"]
            serve_up, listed = timed(
                root, "up", "tinygpt", "--cluster", cluster["address"], "--replicas", "2",
                "--gpus-per-replica", "1",
            )  # fmt: skip
            serve = next(s for s in listed if s["name"] == "tinygpt")["url"]
            base = serve.rsplit("/v1", 1)[0]
            deployed_mb = wb(root, "cluster", "status")["memory_mb"]
            replicas = httpx.get(base + "/replicas", timeout=30).json()
            replica = f"http://127.0.0.1:{replicas[0]['port']}/v1"
            paths = {"here": (here, "here"), "replica": (replica, "tinygpt"),
                     "serve": (serve, "tinygpt")}  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(3):  # warm every path
                for url, model in paths.values():
                    ttft(url, model)
            for _ in range(args.trials):
                for name, (url, model) in paths.items():
                    times[name].append(ttft(url, model))
            before = per_replica(base)
            serve_s, serve_tokens = asyncio.run(concurrent(serve, "tinygpt", 8, args.tokens))
            after = per_replica(base)
            spread = sorted(int(after[r] - before.get(r, 0)) for r in after)
            here_s, here_tokens = asyncio.run(concurrent(here, "here", 8, args.tokens))
        finally:
            wb(root, "down")
            wb(root, "cluster", "down")
    extra = statistics.median(times["serve"]) - statistics.median(times["replica"])
    print(f"start:   engine here {local_up:.1f} s | cluster of 2 nodes {cluster_up:.1f} s | "
          f"2 replicas on Serve {serve_up:.1f} s")  # fmt: skip
    print(f"memory:  cluster {idle_mb} MB PSS idle, {deployed_mb} MB with 2 replicas "
          "(engines included)")  # fmt: skip
    print(f"TTFT:    engine here {stats(times['here'])} | a replica's engine direct "
          f"{stats(times['replica'])} | through Serve {stats(times['serve'])} "
          f"(Serve adds {extra * 1000:+.1f} ms)")  # fmt: skip
    print(f"spread:  8 streams through Serve: {spread} requests per replica, "
          f"{serve_tokens / serve_s:.0f} tok/s | the same 8 to the engine here "
          f"{here_tokens / here_s:.0f} tok/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
