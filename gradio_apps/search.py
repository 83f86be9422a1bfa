"""Pydoc semantic search: nearest pydoc topics to a query, with all-MiniLM-L6-v2.

The index (PROJECT/models/pydoc-index: embeddings.npy, topics.json) is written by
notebooks/semantic_search.ipynb. Queries are embedded by the project's embedding engine
([engines.minilm] in workbench.toml: POST /v1/embeddings, mean pooling and normalisation as
the notebook does), so this app loads no model. Run it the workbench way, which starts the
engine first (`workbench up search`), or standalone inside the env next to a running engine:

    .workbench/envs/embed/bin/python gradio_apps/search.py

Environment: WORKBENCH_ENGINE_URL (the engine's /v1 URL, default http://127.0.0.1:8001/v1),
WORKBENCH_ENGINE_MODEL (the engine's name, default minilm), WORKBENCH_ENGINE_KEY (an API
key, when the engine checks them; else the first of WORKBENCH_API_KEYS),
WORKBENCH_ENGINE_WAIT_S (how long warm-up waits for the engine to be healthy, default 120),
WORKBENCH_INDEX (index folder, default PROJECT/models/pydoc-index), WORKBENCH_PROJECT
(project root, default this file's parent's parent)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np

from workbench.runtime import fronts
from workbench.runtime.stats import stats

PROJECT = Path(os.environ.get("WORKBENCH_PROJECT") or Path(__file__).resolve().parent.parent)
INDEX = Path(os.environ.get("WORKBENCH_INDEX") or PROJECT / "models" / "pydoc-index")
ENGINE = fronts.engine("http://127.0.0.1:8001/v1", "minilm")
MAX_QUERY_CHARS = 500
MAX_K = 20

if not (INDEX / "embeddings.npy").is_file() or not (INDEX / "topics.json").is_file():
    raise FileNotFoundError(
        "models/pydoc-index not found: run notebooks/semantic_search.ipynb "
        "(workbench run notebooks/semantic_search.ipynb)"
        + (f" [looked in {INDEX}]" if os.environ.get("WORKBENCH_INDEX") else "")
    )


def _load_topics(path: Path) -> list[dict]:
    """topics.json is a list of keys or a list of {"key", "text"} objects."""
    raw = json.loads(path.read_text())
    if isinstance(raw, dict):  # {"topics": [...]} or {key: text}
        raw = raw.get("topics", [{"key": k, "text": v} for k, v in raw.items()])
    topics = []
    for item in raw:
        if isinstance(item, str):
            topics.append({"key": item, "text": ""})
        else:
            topics.append({"key": str(item.get("key")), "text": str(item.get("text") or "")})
    if not any(t["text"] for t in topics):  # keys only: take the text from pydoc itself
        from pydoc_data.topics import topics as pydoc_topics

        for t in topics:
            t["text"] = pydoc_topics.get(t["key"], "")[:300]
    return topics


embeddings = np.load(INDEX / "embeddings.npy").astype(np.float32)
topics = _load_topics(INDEX / "topics.json")
if embeddings.ndim != 2 or embeddings.shape[0] != len(topics):
    raise ValueError(
        f"index mismatch: embeddings.npy has shape {embeddings.shape} but topics.json lists "
        f"{len(topics)} topics; rerun notebooks/semantic_search.ipynb"
    )
embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
_client = httpx.Client(
    base_url=ENGINE.url,
    headers=ENGINE.headers,
    timeout=httpx.Timeout(60.0, connect=5.0),
)


def embed(texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings, from the engine."""
    body = {"model": ENGINE.model, "input": texts, "encoding_format": "base64"}
    try:
        reply = _client.post("/embeddings", json=body)
    except httpx.TransportError as exc:
        raise gr.Error(
            f"the engine at {ENGINE.url} does not answer ({type(exc).__name__}): is it running? "
            f"(workbench up {ENGINE.model})",
            print_exception=False,
        ) from None
    if reply.status_code != 200:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200]
        raise gr.Error(message, print_exception=False)
    rows = sorted(reply.json()["data"], key=lambda row: row["index"])
    return np.stack(
        [np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in rows]
    )


def _snippet(text: str, n: int = 160) -> str:
    one_line = " ".join(text.split())
    return one_line[:n] + ("…" if len(one_line) > n else "")


def search(query: str, k: int = 5) -> list[list]:
    """Top-k pydoc topics for `query`: rows of [rank, topic, score, snippet]."""
    if not isinstance(query, str) or not query.strip():
        raise gr.Error("query is empty: describe what you are looking for", print_exception=False)
    if len(query) > MAX_QUERY_CHARS:
        raise gr.Error(
            f"query too long: {len(query)} characters (limit {MAX_QUERY_CHARS})",
            print_exception=False,
        )
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise gr.Error(f"k must be a whole number, got {k!r}", print_exception=False) from None
    if not 1 <= k <= MAX_K:
        raise gr.Error(f"k must be between 1 and {MAX_K}, got {k}", print_exception=False)
    t0 = time.perf_counter()
    scores = embeddings @ embed([query.strip()])[0]
    top = np.argsort(-scores)[: min(k, len(topics))]
    stats.first_token(time.perf_counter() - t0)
    return [
        [rank, topics[i]["key"], round(float(scores[i]), 4), _snippet(topics[i]["text"])]
        for rank, i in enumerate(top, start=1)
    ]


def warmup() -> None:
    """Wait for the engine (it may still be loading its model), then search once."""
    ENGINE.wait_healthy()
    search("how do I handle exceptions", 3)


with gr.Blocks(title="Pydoc semantic search") as demo:
    gr.Markdown(
        f"# Pydoc semantic search\n{len(topics)} pydoc topics, all-MiniLM-L6-v2 embeddings."
    )
    with gr.Row():
        query_box = gr.Textbox(
            label="Query",
            placeholder="try except exception handling",
            scale=4,
            max_length=MAX_QUERY_CHARS,
        )
        k_slider = gr.Slider(1, MAX_K, value=5, step=1, label="k", scale=1)
    search_btn = gr.Button("Search", variant="primary")
    results = gr.Dataframe(
        headers=["rank", "topic", "score", "snippet"],
        datatype=["number", "str", "number", "str"],
        label="Results",
        interactive=False,
        wrap=True,
    )
    search_btn.click(search, [query_box, k_slider], results, api_name="search")
    query_box.submit(search, [query_box, k_slider], results, api_visibility="private")

demo.queue(max_size=32, default_concurrency_limit=2)

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1")
