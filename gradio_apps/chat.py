"""Tiny GPT chat: stream text from the model trained by notebooks/train_tiny_gpt.ipynb.

Run it the workbench way (health checks, metrics, JSON logs, graceful shutdown):

    workbench app up chat

or standalone inside the env:

    .workbench/envs/textgen/bin/python gradio_apps/chat.py

Environment: WORKBENCH_MODEL (model folder or hub id, default PROJECT/models/tiny-gpt),
WORKBENCH_PROJECT (project root, default this file's parent's parent),
WORKBENCH_TORCH_THREADS (intra-op threads of the generation loop, default 1),
WORKBENCH_MAX_BATCH (requests generated together, default 32).

Batching: every request joins one continuous-batching loop (transformers'
`init_continuous_batching`): a background thread steps all running requests together, a new
request joins at the next step instead of waiting for the others to finish, and a stopped or
disconnected client leaves the batch at once (`cancel_request`). Temperature and top_k are
per request. On 2 CPU cores 8 concurrent clients get about 4x the tokens per second of one.

Streaming: the loop keeps each request's newest output (_LatestOutputs) and wakes its
Gradio generator only for the first token and the end. Otherwise the generator decodes the
newest state and yields one update every 50 ms, or less often when many clients stream
(UPDATES_PER_S in all). Waking or yielding per token costs more than half of the throughput
on a small CPU model, as the generation thread and the web server share one GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import uuid
from pathlib import Path

import gradio as gr
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    ContinuousBatchingConfig,
    GenerationConfig,
)
from transformers.generation.continuous_batching.continuous_api import OutputRouter

from workbench.runtime.stats import stats

PROJECT = Path(os.environ.get("WORKBENCH_PROJECT") or Path(__file__).resolve().parent.parent)
MODEL = os.environ.get("WORKBENCH_MODEL") or str(PROJECT / "models" / "tiny-gpt")

MAX_PROMPT_CHARS = 2000
MAX_PROMPT_TOKENS = 512
MAX_NEW_TOKENS = 512
TEMPERATURE_RANGE = (0.05, 2.0)
TOP_K_RANGE = (1, 200)
UPDATE_INTERVAL_S = (0.05, 0.5)  # per stream, shortest and longest
UPDATES_PER_S = 80  # for all streams together: each update costs the server ~1 ms of GIL
MAX_BATCH = int(os.environ.get("WORKBENCH_MAX_BATCH", "32"))
QUEUE_SIZE = 2 * MAX_BATCH  # beyond this many waiting requests, clients get "queue full, retry"
ENGINE_CHECK_S = 1.0

log = logging.getLogger("chat")

_local = Path(MODEL).expanduser()
if (_local.is_absolute() or _local.exists()) and not (_local / "config.json").is_file():
    # a folder, not a hub id: most likely the training notebook has not run yet
    raise FileNotFoundError(
        "models/tiny-gpt not found: run notebooks/train_tiny_gpt.ipynb "
        f"(workbench run notebooks/train_tiny_gpt.ipynb) [looked in {_local}]"
    )

torch.set_num_threads(int(os.environ.get("WORKBENCH_TORCH_THREADS", "1")))
tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForCausalLM.from_pretrained(MODEL, attn_implementation="sdpa").eval()
CONTEXT = int(
    getattr(model.config, "n_positions", None)
    or getattr(model.config, "max_position_embeddings", None)
    or 1024
)


def _engine_config() -> ContinuousBatchingConfig:
    """Paged KV cache sized for MAX_BATCH full contexts on CPU; on a GPU transformers sizes
    it from free memory."""
    config = ContinuousBatchingConfig(
        per_request_processors=True, max_requests_per_batch=MAX_BATCH, allow_block_sharing=False
    )
    if model.device.type == "cpu":
        config.page_size = 32
        config.num_blocks = MAX_BATCH * math.ceil(CONTEXT / config.page_size) + MAX_BATCH
        config.max_batch_tokens = max(512, CONTEXT)
    return config


class _LatestOutputs(OutputRouter):
    """Keeps each stream's newest output for it to read when it next updates, and wakes the
    stream only for its first token and its end. The stock router wakes the event loop for
    every token: those GIL handoffs cost 40 % of a single stream's tok/s. Outputs of
    requests that no stream watches (warmup) go to the output queue as before."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[str, object] = {}
        self.wakers: dict[str, object] = {}

    def watch(self, request_id: str, wake) -> None:
        self.wakers[request_id] = wake

    def forget(self, request_id: str) -> None:
        self.wakers.pop(request_id, None)
        self.latest.pop(request_id, None)

    def deliver(self, output) -> None:
        self.deliver_batch([output])

    def deliver_batch(self, outputs) -> None:
        for output in outputs:
            wake = self.wakers.get(output.request_id)
            if wake is None:
                self.output_queue.put(output)
                continue
            first = output.request_id not in self.latest
            self.latest[output.request_id] = output
            if first or output.is_finished():
                wake()


# The defaults of the sampling processors; each request passes its own temperature and top_k.
engine = model.init_continuous_batching(
    generation_config=GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_k=50,
        max_new_tokens=64,
        eos_token_id=model.generation_config.eos_token_id,
        pad_token_id=model.generation_config.pad_token_id,
    ),
    continuous_batching_config=_engine_config(),
)
engine.output_router = outputs = _LatestOutputs()
engine.start()
_stopping = threading.Event()

# session hash -> request ids of that session's running generations (for the Stop button)
_running: dict[str, set[str]] = {}
_running_lock = threading.Lock()


def _watch_engine() -> None:
    """An app whose generation loop died cannot serve: exit so the supervisor restarts it."""
    while not _stopping.wait(ENGINE_CHECK_S):
        if not engine.is_running():
            log.critical("generation loop stopped unexpectedly; exiting for a restart")
            os._exit(1)


threading.Thread(target=_watch_engine, name="engine-watchdog", daemon=True).start()


def _validate(prompt, max_new_tokens, temperature, top_k) -> tuple[list[int], int, float, int]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("prompt is empty: type some text to continue", print_exception=False)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(
            f"prompt too long: {len(prompt)} characters (limit {MAX_PROMPT_CHARS})",
            print_exception=False,
        )
    try:
        max_new_tokens, top_k, temperature = int(max_new_tokens), int(top_k), float(temperature)
    except (TypeError, ValueError, OverflowError) as e:
        raise gr.Error(f"invalid generation settings: {e}", print_exception=False) from None
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise gr.Error(
            f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}",
            print_exception=False,
        )
    lo, hi = TEMPERATURE_RANGE
    if not lo <= temperature <= hi:
        raise gr.Error(
            f"temperature must be between {lo} and {hi}, got {temperature}", print_exception=False
        )
    lo, hi = TOP_K_RANGE
    if not lo <= top_k <= hi:
        raise gr.Error(f"top_k must be between {lo} and {hi}, got {top_k}", print_exception=False)
    ids = tokenizer(prompt)["input_ids"]
    limit = min(MAX_PROMPT_TOKENS, CONTEXT - 1)
    if len(ids) > limit:
        raise gr.Error(
            f"prompt too long: {len(ids)} tokens (limit {limit}; the model's context is "
            f"{CONTEXT} tokens)",
            print_exception=False,
        )
    # the model cannot see past its context: shorten the continuation to fit
    max_new_tokens = min(max_new_tokens, CONTEXT - len(ids))
    return ids, max_new_tokens, temperature, top_k


def _decode(ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def _update_interval() -> float:
    """50 ms between updates for up to 4 streams, then longer: 32 streams get one update
    every 0.4 s each, and the generation loop keeps the CPU (2.2x the tok/s at 32 clients)."""
    shortest, longest = UPDATE_INTERVAL_S
    return min(longest, max(shortest, len(outputs.wakers) / UPDATES_PER_S))


async def generate(
    prompt, max_new_tokens=64, temperature=0.8, top_k=50, request: gr.Request = None
):
    """Stream a continuation of `prompt`; yields the text so far, at most every 50 ms (less
    often when many clients stream at once)."""
    ids, max_new_tokens, temperature, top_k = _validate(prompt, max_new_tokens, temperature, top_k)
    if _stopping.is_set() or not engine.is_running():
        raise gr.Error("the model is shutting down: retry in a few seconds", print_exception=False)
    t0 = time.perf_counter()
    request_id = uuid.uuid4().hex
    session = getattr(request, "session_hash", None) or ""
    loop = asyncio.get_running_loop()
    news = asyncio.Event()
    outputs.watch(request_id, lambda: loop.call_soon_threadsafe(news.set))
    with _running_lock:
        _running.setdefault(session, set()).add(request_id)
    engine.add_request(
        ids,
        request_id=request_id,
        max_new_tokens=max_new_tokens,
        streaming=True,
        temperature=temperature,
        top_k=top_k,
    )
    text, tokens, finished = "", 0, False
    try:
        await news.wait()  # the first token (or an early end)
        while True:
            news.clear()
            out = outputs.latest[request_id]
            if out.error:
                raise gr.Error(f"generation failed: {out.error}")
            if not tokens and out.generated_tokens:
                stats.first_token(time.perf_counter() - t0)
            tokens = len(out.generated_tokens)
            finished = out.is_finished()
            new = _decode(out.generated_tokens)
            if not finished:
                new = new.rstrip("\ufffd")  # half of a multi-byte character: wait for the rest
            if len(new) > len(text) or (finished and new != text):
                text = new
                yield text
            if finished:
                break
            with contextlib.suppress(TimeoutError):  # woken early by the end
                await asyncio.wait_for(news.wait(), _update_interval())
    finally:
        # Stop button, client disconnect (generator closed) or an error: leave the batch now.
        if not finished:
            engine.cancel_request(request_id)
        outputs.forget(request_id)
        with _running_lock:
            ids_of_session = _running.get(session)
            if ids_of_session is not None:
                ids_of_session.discard(request_id)
                if not ids_of_session:
                    _running.pop(session, None)
        stats.tokens(tokens, time.perf_counter() - t0)


def stop_generation(request: gr.Request = None) -> None:
    """Stop this session's running generations (the queued event is cancelled too)."""
    session = getattr(request, "session_hash", None) or ""
    with _running_lock:
        request_ids = list(_running.get(session, ()))
    for request_id in request_ids:
        engine.cancel_request(request_id)


def shutdown() -> None:
    """Called by the workbench runner on SIGTERM: end every generation and the loop now."""
    _stopping.set()
    with _running_lock:
        request_ids = [r for ids in _running.values() for r in ids]
    for request_id in request_ids:
        engine.cancel_request(request_id)
    engine.stop(block=False)


def warmup() -> None:
    """One short generation so the first real request does not pay for lazy init."""
    request_id = engine.add_request(tokenizer("The")["input_ids"], max_new_tokens=4)
    if engine.get_result(request_id, timeout=60) is None:
        raise RuntimeError("warmup generation produced nothing in 60 s")


with gr.Blocks(title="Tiny GPT chat") as demo:
    gr.Markdown("# Tiny GPT chat\nA small GPT-2 trained on Python's pydoc topics.")
    prompt_box = gr.Textbox(
        label="Prompt", lines=4, max_length=MAX_PROMPT_CHARS, value="The try statement"
    )
    with gr.Row():
        max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=128, step=1, label="max_new_tokens")
        temperature_sl = gr.Slider(*TEMPERATURE_RANGE, value=0.8, step=0.05, label="temperature")
        top_k_sl = gr.Slider(*TOP_K_RANGE, value=50, step=1, label="top_k")
    with gr.Row():
        generate_btn = gr.Button("Generate", variant="primary")
        stop_btn = gr.Button("Stop", variant="stop")
    output = gr.Textbox(label="Output", lines=12, interactive=False)

    gen_event = generate_btn.click(
        generate,
        inputs=[prompt_box, max_tokens, temperature_sl, top_k_sl],
        outputs=output,
        api_name="generate",
        concurrency_limit=MAX_BATCH,
    )
    stop_btn.click(
        stop_generation, None, None, cancels=[gen_event], api_visibility="private", queue=False
    )

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=MAX_BATCH)
# Gradio keeps ~26 KB per browser session (measured: RSS +12 % in 150 s when every request
# came from a new session); the default keeps 10,000 of them.
demo.state_session_capacity = 1000

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1")
