"""The project's own engines (tinygpt, minilm, digits) and apps (gradio_apps/chat.py,
search.py, digits.py as the app draw) served by `workbench up` from their envs: the apps
looked at by headless Chromium (a digit drawn on the sketchpad with the mouse) and called
with gradio_client, the engines with the `openai` client, `tritonclient` and plain httpx;
the digits handler (serving/digits.py) also in-process, in its env.

Models come from the project's notebooks: when models/tiny-gpt or models/pydoc-index are
missing (a fresh clone), their smoke presets write them there first; models/digits is
trained with the notebook's defaults (seconds), so that drawn digits are read right.
"""

import json
import re
from pathlib import Path

import pytest

from tests.support import digits
from tests.support.browser import CHROMIUM, chromium_page
from tests.support.cli import json_data, workbench
from tests.support.kernels import run_in_kernel
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_model(demo_envs: None) -> Path:
    if not (REPO / "models" / "digits").is_dir():
        made = workbench("run", "notebooks/train_digits.ipynb", cwd=REPO)
        assert made.returncode == 0, made.stderr
    return REPO / "models" / "digits"


@pytest.fixture(scope="module")
def apps_up(demo_envs: None, digits_model: Path) -> dict:
    makers = {
        "models/tiny-gpt": ("notebooks/train_tiny_gpt.ipynb", "out_dir", "../models/tiny-gpt"),
        "models/pydoc-index": (
            "notebooks/semantic_search.ipynb",
            "out_dir",
            "../models/pydoc-index",
        ),
    }
    for folder, (notebook, param, value) in makers.items():
        if not (REPO / folder).is_dir():
            made = workbench("run", notebook, "--preset", "smoke", "-p", param, value, cwd=REPO)
            assert made.returncode == 0, made.stderr
    up = workbench("up", cwd=REPO)
    assert up.returncode == 0, up.stderr
    services = {s["name"]: s for s in json_data(workbench("ps", "--json", cwd=REPO).stdout)}
    yield {"services": services, "up": up}
    workbench("down", *DEMO, cwd=REPO)


def rendered_dom(url: str, tmp: Path) -> str:
    """The page after Gradio's client-side rendering, as headless Chromium sees it."""
    return chromium_page(url, tmp, "page.png", budget_ms=15000, timeout=120)


DEMO = {
    "chat": "app",
    "search": "app",
    "draw": "app",
    "tinygpt": "engine",
    "minilm": "engine",
    "digits": "engine",
}


def test_engines_and_apps_healthy_with_tunnel_line(apps_up: dict) -> None:
    services = apps_up["services"]
    assert {n: (s["kind"], s["health"]) for n, s in services.items() if n in DEMO} == {
        name: (kind, "healthy") for name, kind in DEMO.items()
    }
    assert [services[app]["env"] for app in ("chat", "search", "draw")] == [
        "textgen",
        "embed",
        "vision",
    ]
    assert services["tinygpt"]["url"].endswith("/v1")
    line = apps_up["up"].stdout.strip().splitlines()[-1]
    printed = json_data(workbench("tunnel", "--print", "--json", cwd=REPO).stdout)["ssh"]
    for name in DEMO:
        port = services[name]["port"]
        assert f"-L 127.0.0.1:{port}:127.0.0.1:{port}" in line
        assert f"-L 127.0.0.1:{port}:127.0.0.1:{port}" in printed


def test_a_notebook_kernel_calls_the_engines_with_openai(apps_up: dict) -> None:
    """What a researcher types in a wb-textgen notebook: the `openai` client of the env,
    pointed at the engines `workbench up` started."""
    services = apps_up["services"]
    code = f"""
from openai import OpenAI
gpt = OpenAI(base_url="{services["tinygpt"]["url"]}", api_key="unused")
reply = gpt.chat.completions.create(
    model="tinygpt", messages=[{{"role": "user", "content": "The try statement"}}], max_tokens=8
)
print("tokens", reply.usage.completion_tokens, reply.choices[0].finish_reason)
minilm = OpenAI(base_url="{services["minilm"]["url"]}", api_key="unused")
print("dim", len(minilm.embeddings.create(model="minilm", input=["try except"]).data[0].embedding))
"""
    printed = run_in_kernel("wb-textgen", code)
    assert re.search(r"^tokens [1-8] (length|stop)$", printed, re.M), printed
    assert "dim 384" in printed


@pytest.mark.parametrize(
    ("app", "title"),
    [("chat", "Tiny GPT chat"), ("search", "Pydoc semantic search"), ("draw", "Digits")],
)
def test_chromium_renders_title_and_inputs(
    apps_up: dict, app: str, title: str, tmp_path: Path
) -> None:
    dom = rendered_dom(apps_up["services"][app]["url"], tmp_path)
    assert title in dom
    assert "<textarea" in dom or "<input" in dom
    from PIL import Image

    image = Image.open(tmp_path / "page.png").convert("L")
    low, high = image.getextrema()
    assert image.size == (1280, 900) and high - low > 50  # not a blank page


def test_chat_streams_and_search_answers(apps_up: dict) -> None:
    from gradio_client import Client

    chat = Client(apps_up["services"]["chat"]["url"], verbose=False)
    job = chat.submit("The import statement", 40, 0.8, 40, api_name="/generate")
    updates = [update for update in job]
    assert len(updates) >= 1 and updates[-1].strip()
    search = Client(apps_up["services"]["search"]["url"], verbose=False)
    result = search.predict("how do I handle an exception with try", 5, api_name="/search")
    assert "try" in json.dumps(result)


# --- the digits demo: the handler in-process, the engine, the app in Chromium --------------------


@pytest.fixture(scope="module")
def handler_answers(digits_model: Path) -> dict:
    """serving/digits.py run in-process in the vision env: its answers for 64 digits, and
    its refusals of bad images."""
    return digits.in_process(digits_model)


def test_digits_handler_reads_digits_and_refuses_bad_images(handler_answers: dict) -> None:
    answers = handler_answers["answers"]
    for answer in answers:
        scores = answer["scores"]
        assert len(scores) == 10 and sum(scores) == pytest.approx(1, abs=1e-4)
        assert answer["label"] == scores.index(max(scores))
    labels = [a["label"] for a in answers]
    hits = sum(got == want for got, want in zip(labels, handler_answers["labels"], strict=True))
    assert hits >= 0.9 * len(answers), labels
    assert handler_answers["refusals"] == {
        "shape": "image: expected 8x8 numbers 0..16, got shape [7, 8]",
        "nan": "image: values must lie in 0..16, got nan",
        "range": "image: values must lie in 0..16, got 17",
        "text": "image: expected 8x8 numbers 0..16 (a list of 8 lists)",
    }


def test_digits_engine_answers_as_the_handler_in_process(
    apps_up: dict, handler_answers: dict
) -> None:
    """Plain httpx on the engine's /predict: one image, then all 64 as instances (batched
    by the engine), equal to the handler's answers in-process; a bad image is a 400 that
    names it."""
    import httpx

    root = apps_up["services"]["digits"]["url"].rsplit("/v1", 1)[0]
    images, answers = handler_answers["images"], handler_answers["answers"]
    with httpx.Client(base_url=root, timeout=60) as client:
        one = client.post("/predict", json={"inputs": images[0]})
        assert one.status_code == 200, one.text
        assert digits.same_answers([one.json()], answers[:1])
        many = client.post("/predict", json={"instances": images})
        assert many.status_code == 200, many.text
        assert digits.same_answers(many.json()["predictions"], answers)
        bad = client.post("/predict", json={"inputs": images[0][:7]})
        assert bad.status_code == 400 and "image" in bad.json()["error"]["message"], bad.text


def test_a_vision_notebook_calls_the_digits_engine_with_tritonclient(
    apps_up: dict, handler_answers: dict
) -> None:
    """What a researcher types in a wb-vision notebook: the Open Inference Protocol client
    of the env (`tritonclient.http`), unchanged, against the digits engine."""
    port = apps_up["services"]["digits"]["port"]
    code = f"""
import numpy as np
import tritonclient.http as triton
client = triton.InferenceServerClient("127.0.0.1:{port}")
print("ready", client.is_model_ready("digits"))
images = np.array({handler_answers["images"][:4]}, dtype=np.float32)
tensor = triton.InferInput("image", list(images.shape), "FP32")
tensor.set_data_from_numpy(images)
print("labels", client.infer("digits", [tensor]).as_numpy("label").ravel().tolist())
"""
    printed = run_in_kernel("wb-vision", code)
    want = [answer["label"] for answer in handler_answers["answers"][:4]]
    assert "ready True" in printed and f"labels {want}" in printed, printed


def draw(page, strokes: list[list[tuple[int, int]]]) -> None:
    """Mouse strokes on the app's sketchpad, in pixels from its centre, with the brush."""
    page.get_by_role("button", name="Brush").click()
    box = page.locator("#pad canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    for stroke in strokes:
        page.mouse.move(x + stroke[0][0], y + stroke[0][1])
        page.mouse.down()
        for dx, dy in stroke[1:]:
            page.mouse.move(x + dx, y + dy, steps=8)
        page.mouse.up()


ONE = [[(0, -100), (0, 100)]]
SEVEN = [[(-70, -100), (70, -100), (-20, 100)]]


@pytest.mark.parametrize(("digit", "strokes"), [("1", ONE), ("7", SEVEN)])
def test_chromium_draws_a_digit_and_reads_its_label(
    apps_up: dict, digit: str, strokes: list, tmp_path: Path
) -> None:
    """A person's path through the draw app: pick the brush, draw with the mouse, press
    Classify; the label comes from the digits engine."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(apps_up["services"]["draw"]["url"])
            page.locator("#pad canvas").first.wait_for(timeout=60_000)
            draw(page, strokes)
            page.get_by_role("button", name="Classify").click()
            label = page.locator("#digit .output-class")
            label.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / f"digit-{digit}.png"))
            assert label.inner_text().strip() == digit
        finally:
            browser.close()


def test_down_stops_engines_and_apps_with_all_their_processes(apps_up: dict) -> None:
    """Last on purpose: `down` stops the six services, the engines' zygotes and cores too."""
    from tests.support.processes import living, process_tree

    roots = [s["supervisor_pid"] for s in apps_up["services"].values() if s["name"] in DEMO]
    tree = process_tree(*roots)
    assert len(tree) >= 6 + 3 * 3  # supervisors and apps, engine fronts, zygotes and cores
    down = workbench("down", *DEMO, "--json", cwd=REPO)
    assert json_data(down.stdout) == {name: True for name in DEMO}
    assert not [
        s for s in json_data(workbench("ps", "--json", cwd=REPO).stdout) if s["name"] in DEMO
    ]
    assert not living(process_tree(*tree))  # zombies are dead: init reaps them when it may
