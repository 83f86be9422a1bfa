"""The predict engine against the servers a user would otherwise pick, side by side in one
run on the same model and machine, and the token engine against `transformers serve`:
every goal of issue 19 with its figure.

Prints, in one run:
  predict:  the digits CNN (models/digits, else one built here with serving/digits.py's own
            network and loading code) served by the workbench engine (handler
            serving/digits.py:Model, adaptive batching), LitServe (max_batch_size,
            batch_timeout), BentoML (@bentoml.api(batchable=True)), Ray Serve
            (@serve.batch) and FastAPI + uvicorn with no batching, each peer from a venv of
            its own (bench/predict_peers.py), and the in-process ceiling (the handler called
            on batches directly): requests/s and p50/p99 latency at 1, 8 and 32 closed-loop
            clients, 8 and 32 clients over 1, and the engine's mean batch, queue and
            inference time per tier from its /metrics
            (goals at 32 clients: >= 1.2x the best peer's requests/s with p99 <= its p99,
            >= 0.85x the ceiling; one client: p50 <= the in-process call + 2 ms)
  tokens:   the token engine and `transformers serve --continuous-batching` on the same tiny
            GPT (the tests' builder) from the same textgen env (accelerate, which
            transformers serve needs and the env lacks, comes from an overlay folder on
            PYTHONPATH, never installed into the env): tok/s at 1, 8 and 32 streaming
            clients and median time to first token, tokens counted by re-tokenizing the
            answers (the engine may send several in one chunk)
            (goal: keep the lead measured before the predict engine)

Every server binds 127.0.0.1 on a free port, runs one torch thread, and is stopped by its
pid (and the pids of the processes it started). The predict servers are all up at once and
measured in turn, round after round, the in-process ceiling between rounds; the two token
servers likewise; so background load on a shared machine falls on each alike. --quick is a
smoke run (short tiers, one round: about 5 minutes on 2 cores, 2 once the peers' venvs are
cached under .workbench/bench/).

    .venv/bin/python bench/predict.py [--quick] [--part all|predict|tokens] [--seconds 4]
        [--rounds 2] [--token-rounds 3] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import http_load
import predict_peers

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.projects import build_tiny_gpt  # noqa: E402 - the tests' tiny random GPT-2

VISION = REPO / ".workbench" / "envs" / "vision" / "bin" / "python"
TEXTGEN = REPO / ".workbench" / "envs" / "textgen" / "bin" / "python"
OVERLAY = REPO / ".workbench" / "bench" / "overlays" / "accelerate"
HANDLER = "serving/digits.py:Model"
CLIENTS = (1, 8, 32)
MAX_BATCH = 32
WAIT_MS = 10  # every batching server's most a request waits for batch-mates
PROMPT = "The try statement"
# The lead of the token engine over `transformers serve --continuous-batching` at 1, 8, 32
# clients, measured before this issue (the lower ends of the ranges it quotes).
TOKEN_LEAD = {1: 1.76, 8: 1.71, 32: 2.12}

# In the vision env, with one torch thread: sample inputs and the handler's own answers to
# them (one JSON line), then for each line "n reps" the median seconds of one call of the
# handler on n inputs (preprocess included, as every server runs it).
CEILING = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["BENCH_REPO"])
import torch
torch.set_num_threads(1)
from sklearn.datasets import load_digits
from serving.digits import Model
handler = Model()
handler.model_path = sys.argv[1]
handler.setup("cpu")
images = load_digits().images[:64].tolist()
answers = handler.predict([handler.preprocess(x) for x in images])
print(json.dumps({"images": images, "answers": answers}), flush=True)
for line in sys.stdin:
    n, reps = map(int, line.split())
    batch = (images * 2)[:n]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        handler.predict([handler.preprocess(x) for x in batch])
        times.append(time.perf_counter() - t0)
    print(statistics.median(times), flush=True)
"""

RETOKENIZE = r"""
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.load(sys.stdin)
print(json.dumps([len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]))
"""


@dataclass
class Server:
    label: str
    command: list[str]
    health: str
    body: Callable[[list], dict]  # one image -> the request
    answer: Callable[[object], object]  # a reply -> its one output
    env: dict[str, str]


# -- processes ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, limit: float = 240) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"exited {proc.returncode}: " + " | ".join(tail))
        try:
            if http_get(url, timeout=1) == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {limit:.0f} s")


def descendants(pid: int) -> list[int]:
    """Every process started under pid, from /proc (Ray and BentoML start their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server and everything it started, by pid; SIGKILL what is left."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def start(server: Server, port: int, log: Path, cwd: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [part.replace("{port}", str(port)) for part in server.command],
            cwd=cwd,
            env={**server.env, "BENCH_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the bench reaches it only through stop()
        )


# -- the model ----------------------------------------------------------------------------
BUILD_DIGITS = r"""
import json, sys, torch
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from serving.digits import network
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
config = {"architecture": "serving/digits.py:network", "channels": [16, 32], "hidden": 64,
          "dropout": 0.2, "image_size": [8, 8], "max_value": 16.0,
          "labels": list(range(10)), "handler": "serving/digits.py:Model"}
torch.manual_seed(0)
torch.save(network(config).state_dict(), out / "weights.pt")
(out / "config.json").write_text(json.dumps(config))
"""


def digits_model(given: Path | None, tmp: Path) -> tuple[Path, str]:
    if given:
        return given, "given"
    if (REPO / "models" / "digits" / "config.json").is_file():
        return REPO / "models" / "digits", "trained by notebooks/train_digits.ipynb"
    # No trained model yet: the same network, untrained, built by serving/digits.py itself.
    out = tmp / "digits"
    subprocess.run([str(VISION), "-c", BUILD_DIGITS, str(out), str(REPO)], check=True)
    return out, "untrained, same network (models/digits not built yet)"


# -- predict ------------------------------------------------------------------------------
def servers(model: Path, workdir: Path) -> list[Server]:
    """Every server of the digits model; "{port}" in a command line is its port."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    found = [
        Server(
            "workbench engine",
            [str(VISION), "-m", "workbench.runtime.engine", "--name", "digits"]
            + ["--model", str(model), "--handler", HANDLER, "--root", str(REPO)]
            + ["--port", "{port}", "--threads", "1", "--max-batch", str(MAX_BATCH)]
            + ["--max-wait-ms", str(WAIT_MS), "--device", "cpu"],
            "/healthz",
            lambda image: {"inputs": image},
            lambda reply: reply,
            env,
        )
    ]
    peer_env = {
        **env,
        "BENCH_REPO": str(REPO),
        "BENCH_MODEL": str(model),
        "BENCH_MAX_BATCH": str(MAX_BATCH),
        "BENCH_WAIT_MS": str(WAIT_MS),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_raylet_start_wait_time_s": "180",  # a loaded machine starts Ray slowly
        "BENTOML_DO_NOT_TRACK": "true",
        "LITSERVE_DISABLE_TELEMETRY": "1",
    }
    for peer in predict_peers.PEERS:
        found.append(
            Server(
                peer.label,
                peer.command(workdir),
                peer.health,
                peer.body,
                peer.answer,
                peer_env,
            )
        )
    return found


def correct(server: Server, expected: dict):
    """A check of a reply: the handler's own answer to the same input, in process."""

    def check(reply: object) -> bool:
        got = server.answer(reply)
        if not isinstance(got, dict) or got.get("label") != expected["label"]:
            return False
        pairs = zip(got["scores"], expected["scores"], strict=True)
        return max(abs(a - b) for a, b in pairs) < 1e-4

    return check


HISTOGRAMS = ("batch_size", "queue_seconds", "inference_seconds")


def engine_histograms(port: int) -> dict[str, float]:
    """The _sum and _count of the engine's batching histograms, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        name = name.split("{")[0]
        for histogram in HISTOGRAMS:
            for part in ("_sum", "_count"):
                if name == f"workbench_engine_{histogram}{part}":
                    found[histogram + part] = found.get(histogram + part, 0.0) + float(value)
    return found


class Ceiling:
    """The handler called in process (the vision env), measured between the servers' tiers."""

    def __init__(self, model: Path):
        self.proc = subprocess.Popen(
            [str(VISION), "-c", CEILING, str(model)],
            env={**os.environ, "BENCH_REPO": str(REPO), "OMP_NUM_THREADS": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench: the in-process handler failed (exit {self.proc.wait()})")
        data = json.loads(line)
        self.images, self.answers = data["images"], data["answers"]
        self.one_ms: list[float] = []  # median ms of one call, per round
        self.rates: dict[int, list[float]] = {n: [] for n in CLIENTS}  # inputs/s in batches of n

    def seconds(self, n: int, reps: int) -> float:
        self.proc.stdin.write(f"{n} {reps}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def measure(self, reps: int) -> None:
        self.seconds(1, 20)  # warm
        self.one_ms.append(self.seconds(1, reps) * 1000)
        for n in CLIENTS:
            self.rates[n].append(n / self.seconds(n, max(10, reps // n)))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve_all(found: list[Server], tmp: Path) -> tuple[dict, dict]:
    """Start the servers one after another, the last (Ray, the slowest to start) first,
    each tried twice: Ray gives its node a fixed 30 s to come up, which a loaded machine
    can miss. Those that come up: label -> (port, process)."""
    up, started = {}, {}
    for server in reversed(found):
        for attempt in (1, 2):
            port = free_port()
            log = tmp / f"{server.label.split()[0].lower()}.log"
            proc = start(server, port, log, tmp)
            try:
                took = wait_healthy(f"http://127.0.0.1:{port}{server.health}", proc, log)
            except RuntimeError as exc:
                stop(proc)
                started[server.label] = {"error": f"(try {attempt}) {exc}"}
                print(f"  {server.label}: try {attempt}: {exc}", flush=True)
                continue
            print(f"  {server.label}: up in {took:.1f} s", flush=True)
            up[server.label] = (port, proc)
            tiers = {n: http_load.Tier(n) for n in CLIENTS}
            started[server.label] = {"start_s": took, "tiers": tiers}
            break
    return up, {s.label: started[s.label] for s in found}


def predict_bench(args, tmp: Path) -> tuple[dict, Ceiling, str, Path]:
    """Every server up at once; each round runs 1, 8, 32 clients against each server in
    turn (the order rotating), then the in-process ceiling, so that background load on a
    shared machine falls on all of them alike."""
    model, origin = digits_model(args.model, tmp)
    for peer in predict_peers.PEERS:
        spent = predict_peers.ensure_venv(peer)
        if spent:
            print(f"  built {peer.venv} ({spent:.0f} s)", flush=True)
    ceiling = Ceiling(model)
    found = {s.label: s for s in servers(model, tmp)}
    up, results = serve_all(list(found.values()), tmp)
    try:
        requests = {
            label: [
                (json.dumps(found[label].body(image)).encode(), correct(found[label], answer))
                for image, answer in zip(ceiling.images, ceiling.answers, strict=True)
            ]
            for label in up
        }

        async def run() -> None:
            for label, (port, _) in up.items():
                # Warm-up: first batches, lazy imports, a batching peer's first fits.
                await http_load.closed_loop(port, "/predict", requests[label], 8, 2.0, 400)
            order = list(up)
            for round_ in range(args.rounds):
                for n in CLIENTS:
                    for label in order[round_ % len(order) :] + order[: round_ % len(order)]:
                        port = up[label][0]
                        engine = label == "workbench engine"
                        before = engine_histograms(port) if engine else {}
                        got = await http_load.closed_loop(
                            port, "/predict", requests[label], n, args.seconds, 200_000
                        )
                        if engine:
                            after = engine_histograms(port)
                            sums = results[label].setdefault("histograms", {}).setdefault(n, {})
                            for key, value in after.items():
                                sums[key] = sums.get(key, 0.0) + value - before.get(key, 0.0)
                        tier = results[label]["tiers"][n]
                        tier.seconds += got.seconds
                        tier.client_cpu += got.client_cpu
                        tier.latencies += got.latencies
                        tier.errors += got.errors
                ceiling.measure(100 if args.quick else 300)

        asyncio.run(run())
    finally:
        for _, proc in up.values():
            stop(proc)
        ceiling.close()
    return results, ceiling, origin, model


def predict_report(results: dict, ceiling: Ceiling, origin: str, model: Path, args) -> None:
    print(f"\npredict: the digits CNN, {model} ({origin}); POST /predict, one 8x8 image a request;")
    print(
        f"  closed-loop clients, {args.rounds} round(s) of {args.seconds:g} s per tier and server, "
        f"servers in turn; batching: max batch {MAX_BATCH}, wait {WAIT_MS} ms; 1 torch thread each"
    )
    head = f"{'server':34}{'clients':>8}{'req/s':>9}{'vs 1':>7}{'p50 ms':>9}{'p99 ms':>9}"
    head += "  start; errors"
    print(head)
    for label, result in results.items():
        if "error" in result:
            print(f"{label:34}  not measured: {result['error']}")
            continue
        tiers = result["tiers"]
        for n, tier in tiers.items():
            ratio = tier.rate / tiers[1].rate if tiers[1].rate else float("nan")
            errs = f"  {len(tier.errors)}: {tier.errors[0]}" if tier.errors else ""
            if n == 1:
                errs = f"  {result['start_s']:.1f} s" + errs
            name = label if n == 1 else ""
            print(
                f"{name:34}{n:8}{tier.rate:9.0f}{ratio:6.2f}x"
                f"{tier.ms(50):9.2f}{tier.ms(99):9.2f}{errs}"
            )
    histograms = results.get("workbench engine", {}).get("histograms")
    if histograms:

        def mean(n: int, name: str) -> float:
            count = histograms[n].get(name + "_count", 0.0)
            return histograms[n].get(name + "_sum", 0.0) / count if count else float("nan")

        print(
            f"{'  the engine, per tier (its /metrics)':34}  mean batch "
            + " / ".join(f"{mean(n, 'batch_size'):.1f}" for n in CLIENTS)
            + ", queue ms "
            + " / ".join(f"{mean(n, 'queue_seconds') * 1000:.1f}" for n in CLIENTS)
            + ", inference ms a batch "
            + " / ".join(f"{mean(n, 'inference_seconds') * 1000:.2f}" for n in CLIENTS)
        )
    # Medians over the rounds.
    rates = {n: statistics.median(r) for n, r in ceiling.rates.items()}
    one_ms = statistics.median(ceiling.one_ms)
    print(
        f"{'in-process ceiling (the handler)':34}  one call {one_ms:.2f} ms; inputs/s in "
        + ", ".join(f"batches of {n}: {rate:.0f}" for n, rate in rates.items())
    )

    wb = results.get("workbench engine", {})
    peers = {k: v for k, v in results.items() if k != "workbench engine" and "tiers" in v}
    print("\npredict goals")
    if "tiers" not in wb or not peers:
        why = wb.get("error") or "no peer measured"
        for goal in (
            "32 clients: >= 1.2x the best peer's req/s",
            "32 clients: p99 <= the best peer's p99",
            "32 clients: >= 0.85x the in-process ceiling",
            "1 client: p50 <= in-process call + 2 ms",
        ):
            print(f"  {goal}: NOT MEASURED ({why})")
        return
    best_label = max(peers, key=lambda k: peers[k]["tiers"][32].rate)
    best = peers[best_label]["tiers"][32]
    mine, one = wb["tiers"][32], wb["tiers"][1]
    goals = [
        (
            "32 clients: >= 1.2x the best peer's req/s",
            f"{mine.rate:.0f} / {best.rate:.0f} ({best_label}) = {mine.rate / best.rate:.2f}x",
            mine.rate >= 1.2 * best.rate,
        ),
        (
            "32 clients: p99 <= the best peer's p99",
            f"{mine.ms(99):.2f} ms vs {best.ms(99):.2f} ms",
            mine.ms(99) <= best.ms(99),
        ),
        (
            "32 clients: >= 0.85x the in-process ceiling",
            f"{mine.rate:.0f} / {rates[32]:.0f} (batch 32) = {mine.rate / rates[32]:.2f}x",
            mine.rate >= 0.85 * rates[32],
        ),
        (
            "  (the load generator's own CPU a request)",
            f"{mine.client_cpu / max(1, len(mine.latencies)) * 1000:.2f} ms; the model's "
            f"{1000 / rates[32]:.2f} ms",
            None,
        ),
        (
            "1 client: p50 <= in-process call + 2 ms",
            f"{one.ms(50):.2f} ms vs {one_ms:.2f} + 2 ms",
            one.ms(50) <= one_ms + 2,
        ),
        (
            "no failed or wrong answer",
            f"{sum(len(t.errors) for t in wb['tiers'].values())} errors",
            not any(t.errors for t in wb["tiers"].values()),
        ),
    ]
    for goal, figure, met in goals:
        verdict = "" if met is None else "MET" if met else "NOT MET"
        print(f"  {goal:46} {figure:44} {verdict}")


# -- tokens -------------------------------------------------------------------------------
def ensure_overlay() -> Path:
    """accelerate alone (no dependencies: the env has them) in a folder put on PYTHONPATH."""
    if (OVERLAY / "accelerate" / "__init__.py").is_file():
        return OVERLAY
    done = subprocess.run(
        [sys.executable, "-m", "uv", "pip", "install", "--target", str(OVERLAY), "--no-deps"]
        + ["--python", str(TEXTGEN), *predict_peers.uv_index_args(), "accelerate"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: installing accelerate into {OVERLAY}: {done.stderr[-400:]}")
    return OVERLAY


async def stream_once(http, body: dict) -> dict:
    t0 = time.perf_counter()
    first, text = None, []
    async with http.stream("POST", "/v1/completions", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"HTTP {reply.status_code}: {(await reply.aread())[:200]}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(str(chunk["error"])[:200])
            piece = chunk["choices"][0].get("text") if chunk.get("choices") else ""
            if piece:
                first = first or time.perf_counter()
                text.append(piece)
    done = time.perf_counter()
    return {"ttft": (first or done) - t0, "text": "".join(text)}


def token_bench(args, tmp: Path) -> dict:
    import httpx

    model = tmp / "tiny-gpt"
    build_tiny_gpt(model)
    overlay = ensure_overlay()
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_API_KEYS"}
    env["OMP_NUM_THREADS"] = "1"
    ports = {"workbench engine": free_port(), "transformers serve": free_port()}
    commands = {
        "workbench engine": (
            [str(TEXTGEN), "-m", "workbench.runtime.engine", "--name", "tinygpt"]
            + [
                "--model",
                str(model),
                "--port",
                str(ports["workbench engine"]),
                "--root",
                str(REPO),
            ],
            env,
            "/healthz",
        ),
        "transformers serve": (
            [str(TEXTGEN.parent / "transformers"), "serve", str(model), "--continuous-batching"]
            + [
                "--device",
                "cpu",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["transformers serve"]),
            ],
            {**env, "PYTHONPATH": str(overlay)},
            "/health",
        ),
    }
    procs = {}
    try:
        for label, (command, penv, health) in commands.items():
            log = tmp / f"{label.split()[0]}-tokens.log"
            with log.open("w") as out:
                procs[label] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=penv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            wait_healthy(f"http://127.0.0.1:{ports[label]}{health}", procs[label], log)

        async def run() -> dict:
            tiers = {
                label: {n: {"walls": [], "ttfts": [], "texts": [], "errors": []} for n in CLIENTS}
                for label in ports
            }
            clients = {
                label: httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=600,
                    limits=httpx.Limits(max_connections=64),
                )
                for label, port in ports.items()
            }
            body = {"prompt": PROMPT, "max_tokens": args.tokens, "stream": True, "temperature": 0}
            bodies = {
                "workbench engine": {**body, "model": "tinygpt"},
                "transformers serve": {**body, "model": str(model)},
            }
            for label in ports:  # warm each (first batch, lazy imports)
                await stream_once(clients[label], bodies[label])
            for _ in range(args.token_rounds):
                for n in CLIENTS:
                    for label in ports:
                        t0 = time.perf_counter()
                        got = await asyncio.gather(
                            *(stream_once(clients[label], bodies[label]) for _ in range(n)),
                            return_exceptions=True,
                        )
                        tier = tiers[label][n]
                        tier["walls"].append(time.perf_counter() - t0)
                        tier["texts"].append([g["text"] for g in got if isinstance(g, dict)])
                        tier["ttfts"] += [g["ttft"] for g in got if isinstance(g, dict)]
                        tier["errors"] += [repr(g) for g in got if isinstance(g, Exception)]
            for http in clients.values():
                await http.aclose()
            return tiers

        tiers = asyncio.run(run())
    finally:
        for proc in procs.values():
            stop(proc)
    texts = [
        t
        for label in tiers.values()
        for tier in label.values()
        for rnd in tier["texts"]
        for t in rnd
    ]
    counted = subprocess.run(
        [str(TEXTGEN), "-c", RETOKENIZE, str(model)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    counts = iter(json.loads(counted.stdout))
    for label in tiers.values():
        for tier in label.values():
            tokens = [sum(next(counts) for _ in rnd) for rnd in tier["texts"]]
            tier["rate"] = sum(tokens) / sum(tier["walls"])
            tier["per_request"] = sum(tokens) / max(1, sum(len(r) for r in tier["texts"]))
    return tiers


def token_report(tiers: dict, args) -> None:
    print(
        f"\ntokens: a tiny random GPT-2 (tests/support builder), {args.tokens} tokens a request,"
        f" streamed /v1/completions, greedy; {args.token_rounds} round(s) per tier; tokens"
        " re-tokenized from the answers"
    )
    print(
        f"{'server':34}{'clients':>8}{'tok/s':>9}{'vs 1':>7}{'TTFT p50':>10}{'tok/req':>9}  errors"
    )
    for label, by_n in tiers.items():
        for n, tier in by_n.items():
            ratio = tier["rate"] / by_n[1]["rate"]
            ttft = statistics.median(tier["ttfts"]) * 1000 if tier["ttfts"] else float("nan")
            errs = f"  {len(tier['errors'])}: {tier['errors'][0]}" if tier["errors"] else ""
            print(
                f"{label if n == 1 else '':34}{n:8}{tier['rate']:9.1f}{ratio:6.2f}x"
                f"{ttft:8.1f}ms{tier['per_request']:9.1f}{errs}"
            )
    mine, theirs = tiers["workbench engine"], tiers["transformers serve"]
    print("\ntoken goals (keep the lead over transformers serve --continuous-batching)")
    for n in CLIENTS:
        ratio = mine[n]["rate"] / theirs[n]["rate"]
        t_mine = statistics.median(mine[n]["ttfts"]) * 1000
        t_theirs = statistics.median(theirs[n]["ttfts"]) * 1000
        met = ratio >= TOKEN_LEAD[n] and t_mine <= t_theirs
        print(
            f"  {n:2} clients: tok/s {ratio:.2f}x (before: >= {TOKEN_LEAD[n]}x), median TTFT "
            f"{t_mine:.1f} vs {t_theirs:.1f} ms{'':6} {'MET' if met else 'NOT MET'}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: short tiers, one round")
    ap.add_argument("--seconds", type=float, help="seconds per tier and round (default 4)")
    ap.add_argument("--rounds", type=int, help="rounds of the predict tiers (default 2)")
    ap.add_argument("--token-rounds", type=int, help="rounds of the token tiers (default 3)")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens a request")
    ap.add_argument("--model", type=Path, help="a digits model folder (default models/digits)")
    ap.add_argument(
        "--part", choices=("all", "predict", "tokens"), default="all", help="what to run"
    )
    args = ap.parse_args()
    args.seconds = args.seconds or (1.0 if args.quick else 4.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.token_rounds = args.token_rounds or (1 if args.quick else 3)
    for python, what in ((VISION, "vision"), (TEXTGEN, "textgen")):
        if not python.exists():
            print(
                f"bench: no {what} env at {python}; build it: .venv/bin/workbench env create {what}"
            )
            return 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-bench-predict-") as tmp:
        tmp = Path(tmp)
        if args.part in ("all", "predict"):
            print("predict servers (started one at a time, measured in turn):", flush=True)
            predicted = predict_bench(args, tmp)
        if args.part in ("all", "tokens"):
            print("token engine and transformers serve (side by side):", flush=True)
            tokens = token_bench(args, tmp)
    if args.part in ("all", "predict"):
        predict_report(*predicted, args)
    if args.part in ("all", "tokens"):
        token_report(tokens, args)
    print(
        f"\n{time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} CPUs (servers measured in turn, so that background load falls on "
        "each alike)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
