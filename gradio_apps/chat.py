"""Tiny GPT chat: stream text from the model trained by notebooks/train_tiny_gpt.ipynb.

A thin front: the model runs in the project's engine ([engines.tinygpt] in workbench.toml,
an OpenAI-compatible API in processes of its own, with continuous batching); this app only
validates the inputs, streams the engine's completion and shows it. Run it the workbench
way, which starts the engine first and tells the app where it is:

    workbench up chat

or standalone inside the env, next to a running engine:

    .workbench/envs/textgen/bin/python gradio_apps/chat.py

Environment: WORKBENCH_ENGINE_URL (the engine's /v1 URL, default http://127.0.0.1:8000/v1),
WORKBENCH_ENGINE_MODEL (the engine's name, default tinygpt), WORKBENCH_ENGINE_KEY (an API
key, when the engine checks them; else the first of WORKBENCH_API_KEYS),
WORKBENCH_ENGINE_WAIT_S (how long warm-up waits for the engine to be healthy, default 120),
WORKBENCH_MAX_BATCH (requests streamed at once, default 32; twice as many may wait, then a
request gets HTTP 503 "Queue is full").

Streaming: each request is one streamed /v1/completions call; the Stop button or a closed tab
cancels the Gradio event, which closes that call, and the engine drops the request at its
next step. Updates go out every 50 ms, or less often when many clients stream (UPDATES_PER_S
in all), so the browser and the web server are not flooded with tiny updates.
"""

from __future__ import annotations

import json
import os
import time

import gradio as gr
import httpx

from workbench.runtime import fronts
from workbench.runtime.stats import stats

ENGINE = fronts.engine("http://127.0.0.1:8000/v1", "tinygpt")

MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 512
TEMPERATURE_RANGE = (0.05, 2.0)
TOP_K_RANGE = (1, 200)
UPDATE_INTERVAL_S = (0.05, 0.5)  # per stream, shortest and longest
UPDATES_PER_S = 80  # for all streams together: each update costs the server ~1 ms
MAX_BATCH = int(os.environ.get("WORKBENCH_MAX_BATCH", "32"))
QUEUE_SIZE = 2 * MAX_BATCH  # beyond this many waiting requests, clients get "queue full, retry"

_client = httpx.AsyncClient(
    base_url=ENGINE.url,
    headers=ENGINE.headers,
    timeout=httpx.Timeout(600.0, connect=5.0),
    limits=httpx.Limits(max_connections=MAX_BATCH + 8, max_keepalive_connections=MAX_BATCH),
)
_streaming = 0  # generations streaming now, for the update interval


def _validate(prompt, max_new_tokens, temperature, top_k) -> tuple[int, float, int]:
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
    return max_new_tokens, temperature, top_k


def _engine_error(status: int, body: bytes) -> gr.Error:
    """The engine's refusal, as the message a person reads."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    if status == 429:
        message = "the model is busy: retry in a few seconds"
    return gr.Error(message, print_exception=False)


def _update_interval() -> float:
    """50 ms between updates for up to 4 streams, then longer: 32 streams get one update
    every 0.4 s each, and the CPU stays with generation."""
    shortest, longest = UPDATE_INTERVAL_S
    return min(longest, max(shortest, _streaming / UPDATES_PER_S))


async def generate(prompt, max_new_tokens=64, temperature=0.8, top_k=50):
    """Stream a continuation of `prompt`; yields the text so far, at most every 50 ms (less
    often when many clients stream at once)."""
    global _streaming
    max_new_tokens, temperature, top_k = _validate(prompt, max_new_tokens, temperature, top_k)
    body = {
        "model": ENGINE.model,
        "prompt": prompt,
        "max_tokens": max_new_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    text, shown_text, tokens, shown = "", "", 0, 0.0
    _streaming += 1
    try:
        async with _client.stream("POST", "/completions", json=body) as reply:
            if reply.status_code != 200:
                raise _engine_error(reply.status_code, await reply.aread())
            async for line in reply.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise gr.Error(f"generation failed: {chunk['error'].get('message')}")
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk["choices"]:
                    if choice["text"] and not text:
                        stats.first_token(time.perf_counter() - t0)
                    text += choice["text"]
                now = time.perf_counter()
                if text != shown_text and now - shown >= _update_interval():
                    shown, shown_text = now, text
                    yield text
    except httpx.TransportError as exc:
        raise gr.Error(
            f"the engine at {ENGINE.url} does not answer ({type(exc).__name__}): is it running? "
            f"(workbench up {ENGINE.model})",
            print_exception=False,
        ) from None
    finally:
        _streaming -= 1
        stats.tokens(tokens, time.perf_counter() - t0)
    if text != shown_text:
        yield text


def warmup() -> None:
    """Wait for the engine (it may still be loading its model), then ask it for one token,
    so a wrong URL, model name or key shows at start, not at the first request."""
    ENGINE.wait_healthy()
    body = {"model": ENGINE.model, "prompt": "The", "max_tokens": 1}
    reply = httpx.post(f"{ENGINE.url}/completions", json=body, headers=ENGINE.headers, timeout=60)
    if reply.status_code != 200:
        raise RuntimeError(f"the engine at {ENGINE.url} refused a request: {reply.text[:300]}")


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
    stop_btn.click(None, None, None, cancels=[gen_event], api_visibility="private", queue=False)

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=MAX_BATCH)
# Gradio keeps ~26 KB per browser session (measured: RSS +12 % in 150 s when every request
# came from a new session); the default keeps 10,000 of them.
demo.state_session_capacity = 1000

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1")
