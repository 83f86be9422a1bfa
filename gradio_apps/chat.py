"""Tiny GPT chat: stream text from the model trained by notebooks/train_tiny_gpt.ipynb.

Run it the workbench way (health checks, metrics, JSON logs, graceful shutdown):

    workbench app up chat

or standalone inside the env:

    .workbench/envs/textgen/bin/python gradio_apps/chat.py

Environment: WORKBENCH_MODEL (model folder, default PROJECT/models/tiny-gpt),
WORKBENCH_PROJECT (project root, default this file's parent's parent),
WORKBENCH_TORCH_THREADS (intra-op threads per generation, default 1).

Streaming design: `model.generate` runs in a worker thread and hands token ids to a
collector (a list append per token, no decoding, no queue). The Gradio generator wakes on
the first token, then at most every UPDATE_INTERVAL_S decodes everything so far and yields
one update. Yielding per token costs more than half of the throughput on a small CPU model:
the generation thread and the web server share one GIL.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import gradio as gr
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

try:  # provided by the workbench app runner; a no-op when this file runs standalone
    from workbench_appstats import stats
except ImportError:  # pragma: no cover - standalone run

    class _NoStats:
        def __getattr__(self, name):
            return lambda *a, **k: None

    stats = _NoStats()

PROJECT = Path(os.environ.get("WORKBENCH_PROJECT") or Path(__file__).resolve().parent.parent)
MODEL = Path(os.environ.get("WORKBENCH_MODEL") or PROJECT / "models" / "tiny-gpt")

MAX_PROMPT_CHARS = 2000
MAX_PROMPT_TOKENS = 512
MAX_NEW_TOKENS = 512
TEMPERATURE_RANGE = (0.05, 2.0)
TOP_K_RANGE = (1, 200)
UPDATE_INTERVAL_S = 0.05
CONCURRENCY = 2

if not (MODEL / "config.json").is_file():
    raise FileNotFoundError(
        "models/tiny-gpt not found: run notebooks/train_tiny_gpt.ipynb "
        "(workbench run notebooks/train_tiny_gpt.ipynb)"
        + (f" [looked in {MODEL}]" if os.environ.get("WORKBENCH_MODEL") else "")
    )

torch.set_num_threads(int(os.environ.get("WORKBENCH_TORCH_THREADS", "1")))
tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
CONTEXT = int(
    getattr(model.config, "n_positions", None)
    or getattr(model.config, "max_position_embeddings", None)
    or 1024
)
PAD_ID = next(
    (
        i
        for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, model.config.eos_token_id)
        if i is not None
    ),
    0,
)

# session hash -> stop events of that session's running generations (for the Stop button)
_running: dict[str, set[threading.Event]] = {}
_running_lock = threading.Lock()


class _Collector(BaseStreamer):
    """Collects new token ids; wakes the consumer on the first one and at the end."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.first = threading.Event()
        self.done = threading.Event()
        self.first_at = 0.0
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() pushes the prompt first
            self._prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        if not self.first.is_set():
            self.first_at = time.perf_counter()
            self.first.set()

    def end(self) -> None:
        self.done.set()
        self.first.set()


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def _validate(prompt, max_new_tokens, temperature, top_k) -> tuple[torch.Tensor, int, float, int]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("prompt is empty: type some text to continue", print_exception=False)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(
            f"prompt too long: {len(prompt)} characters (limit {MAX_PROMPT_CHARS})",
            print_exception=False,
        )
    try:
        max_new_tokens, top_k, temperature = int(max_new_tokens), int(top_k), float(temperature)
    except (TypeError, ValueError) as e:
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
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    limit = min(MAX_PROMPT_TOKENS, CONTEXT - 1)
    if ids.shape[1] > limit:
        raise gr.Error(
            f"prompt too long: {ids.shape[1]} tokens (limit {limit}; the model's context is "
            f"{CONTEXT} tokens)",
            print_exception=False,
        )
    # the model cannot see past its context: shorten the continuation to fit
    max_new_tokens = min(max_new_tokens, CONTEXT - ids.shape[1])
    return ids, max_new_tokens, temperature, top_k


def _decode(ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def generate(prompt, max_new_tokens=64, temperature=0.8, top_k=50, request: gr.Request = None):
    """Stream a continuation of `prompt`; yields the text so far, at most every 50 ms."""
    ids, max_new_tokens, temperature, top_k = _validate(prompt, max_new_tokens, temperature, top_k)
    t0 = time.perf_counter()
    stop = threading.Event()
    session = getattr(request, "session_hash", None) or ""
    with _running_lock:
        _running.setdefault(session, set()).add(stop)
    collector = _Collector()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_k=top_k,
                    pad_token_id=PAD_ID,
                    streamer=collector,
                    stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
                )
        except BaseException as e:  # surfaced to the client below
            failure.append(e)
        finally:
            collector.end()

    worker = threading.Thread(target=work, name="generate", daemon=True)
    worker.start()
    text = ""
    try:
        collector.first.wait()
        if collector.ids:
            stats.first_token(collector.first_at - t0)
            text = _decode(collector.ids).rstrip("\ufffd")
            if text:
                yield text
        while True:
            finished = collector.done.wait(UPDATE_INTERVAL_S)
            new = _decode(list(collector.ids))
            if not finished:
                new = new.rstrip("\ufffd")  # half of a multi-byte character: wait for the rest
            if len(new) > len(text) or (finished and new != text):
                text = new
                yield text
            if finished:
                break
        if failure:
            raise gr.Error(f"generation failed: {failure[0]!r}")
    finally:
        # Stop button, client disconnect (generator closed) or normal end: stop the worker.
        stop.set()
        with _running_lock:
            events = _running.get(session)
            if events is not None:
                events.discard(stop)
                if not events:
                    _running.pop(session, None)
        stats.tokens(len(collector.ids), time.perf_counter() - t0)


def stop_generation(request: gr.Request = None) -> None:
    """Stop this session's running generations (the queued event is cancelled too)."""
    session = getattr(request, "session_hash", None) or ""
    with _running_lock:
        for event in _running.get(session, ()):
            event.set()


def shutdown() -> None:
    """Called by the workbench runner on SIGTERM: end every generation now."""
    with _running_lock:
        for events in _running.values():
            for event in events:
                event.set()


def warmup() -> None:
    """One short generation so the first real request does not pay for lazy init."""
    for _ in generate("The", max_new_tokens=4, temperature=1.0, top_k=10):
        pass


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
        concurrency_limit=CONCURRENCY,
    )
    stop_btn.click(
        stop_generation, None, None, cancels=[gen_event], api_visibility="private", queue=False
    )

demo.queue(max_size=16, default_concurrency_limit=CONCURRENCY)

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1")
