"""Digits: draw a digit, read what the CNN trained by notebooks/train_digits.ipynb sees.

A thin front: the model runs in the project's digits engine ([engines.digits] in
workbench.toml, serving/digits.py behind POST /predict, with adaptive batching); this app
only turns the drawing into the model's input and shows the answer. Run it the workbench
way, which starts the engine first and tells the app where it is:

    workbench up digits

or standalone inside the env, next to a running engine:

    .workbench/envs/vision/bin/python gradio_apps/digits.py

The drawing becomes an 8x8 image the way scikit-learn's digits were made from 32x32 bitmaps:
the ink's bounding box, centred in a square, as 32x32 on/off pixels, then the number of
pixels on in each 4x4 block (0..16).

Environment: WORKBENCH_ENGINE_URL (the engine's /v1 URL, default http://127.0.0.1:8002/v1),
WORKBENCH_ENGINE_MODEL (the engine's name, default digits), WORKBENCH_ENGINE_KEY (an API
key, when the engine checks them; else the first of WORKBENCH_API_KEYS),
WORKBENCH_ENGINE_WAIT_S (how long warm-up waits for the engine to be healthy, default 120).
"""

from __future__ import annotations

import time

import gradio as gr
import httpx
import numpy as np
from PIL import Image, ImageOps

from workbench.runtime import fronts
from workbench.runtime.stats import stats

ENGINE = fronts.engine("http://127.0.0.1:8002/v1", "digits")
INK = 64  # of 255: lighter pixels of the drawing count as paper
CANVAS = 280  # pixels a side; a 12-pixel brush draws strokes about as thick as the digits' own

_client = httpx.Client(
    base_url=ENGINE.root, headers=ENGINE.headers, timeout=httpx.Timeout(30.0, connect=5.0)
)


def to_digit(drawing: Image.Image) -> list[list[int]]:
    """The drawing (dark ink on white) as the digits data: 8x8 counts 0..16, or an error
    when nothing is drawn."""
    ink = ImageOps.invert(drawing.convert("L"))
    box = ink.point(lambda v: 255 if v > INK else 0).getbbox()
    if box is None:
        raise gr.Error("draw a digit first", print_exception=False)
    glyph = ink.crop(box)
    side = max(glyph.size)
    square = Image.new("L", (side, side))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    bitmap = np.asarray(square.resize((32, 32), Image.Resampling.BOX)) > INK
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).tolist()


def predict_digit(image: list[list[int]]) -> dict:
    """The engine's answer for one 8x8 image: {"label": int, "scores": [10 floats]}."""
    try:
        reply = _client.post("/predict", json={"inputs": image})
    except httpx.TransportError as exc:
        raise gr.Error(
            f"the engine at {ENGINE.root} does not answer ({type(exc).__name__}): is it running? "
            f"(workbench up {ENGINE.model})",
            print_exception=False,
        ) from None
    if reply.status_code != 200:
        try:
            error = reply.json()["error"]
            message = error["message"] if isinstance(error, dict) else str(error)
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200]
        if reply.status_code == 429:
            message = "the model is busy: retry in a few seconds"
        raise gr.Error(message, print_exception=False)
    return reply.json()


def classify(drawing: dict | None) -> tuple[dict, Image.Image]:
    """The label scores for a sketchpad value, and the 8x8 input the model saw."""
    if not drawing or drawing.get("composite") is None:
        raise gr.Error("draw a digit first", print_exception=False)
    t0 = time.perf_counter()
    image = to_digit(drawing["composite"])
    answer = predict_digit(image)
    stats.first_token(time.perf_counter() - t0)
    scores = {str(label): score for label, score in enumerate(answer["scores"])}
    seen = Image.fromarray(255 - np.array(image, dtype=np.uint8) * 15)  # dark ink on white
    return scores, seen.resize((128, 128), Image.Resampling.NEAREST)


def warmup() -> None:
    """Wait for the engine (it may still be loading its model), then classify a blank
    image, so a wrong URL, model name or key shows at start, not at the first drawing."""
    ENGINE.wait_healthy()
    predict_digit([[0] * 8 for _ in range(8)])


with gr.Blocks(title="Digits") as demo:
    gr.Markdown(
        "# Digits\nDraw a digit (0-9): a small CNN trained on scikit-learn's 8x8 digits reads it."
    )
    with gr.Row():
        pad = gr.Sketchpad(
            label="Draw here (pick the brush on the left)",
            elem_id="pad",
            type="pil",
            image_mode="L",
            canvas_size=(CANVAS, CANVAS),
            fixed_canvas=True,
            brush=gr.Brush(default_size=12, colors=["#000000"], color_mode="fixed"),
            layers=False,
            transforms=(),
        )
        with gr.Column():
            label = gr.Label(label="Digit", num_top_classes=3, elem_id="digit")
            seen = gr.Image(label="What the model sees (8x8)", image_mode="L", height=160)
    classify_btn = gr.Button("Classify", variant="primary")
    classify_btn.click(classify, pad, [label, seen], api_name="classify")

demo.queue(max_size=64, default_concurrency_limit=8)

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1")
