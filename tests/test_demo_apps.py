"""The project's own engines (tinygpt, minilm) and apps (gradio_apps/chat.py, search.py)
served by `workbench up` from their envs: the apps looked at by headless Chromium and called
with gradio_client, the engines with the `openai` client.

Models come from the project's notebooks: when models/tiny-gpt or models/pydoc-index are
missing (a fresh clone), their smoke presets write them there first.
"""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, chromium_page, json_data, run_in_kernel, workbench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def apps_up(demo_envs: None) -> dict:
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
    workbench("down", "chat", "search", "tinygpt", "minilm", cwd=REPO)


def rendered_dom(url: str, tmp: Path) -> str:
    """The page after Gradio's client-side rendering, as headless Chromium sees it."""
    return chromium_page(url, tmp, "page.png", budget_ms=15000, timeout=120)


DEMO = {"chat": "app", "search": "app", "tinygpt": "engine", "minilm": "engine"}


def test_engines_and_apps_healthy_with_tunnel_line(apps_up: dict) -> None:
    services = apps_up["services"]
    assert {n: (s["kind"], s["health"]) for n, s in services.items() if n in DEMO} == {
        name: (kind, "healthy") for name, kind in DEMO.items()
    }
    assert {services["chat"]["env"], services["search"]["env"]} == {"textgen", "embed"}
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
    ("app", "title"), [("chat", "Tiny GPT chat"), ("search", "Pydoc semantic search")]
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


def test_down_stops_engines_and_apps_with_all_their_processes(apps_up: dict) -> None:
    """Last on purpose: `down` stops the four services, the engines' zygotes and cores too."""
    from tests.conftest import process_tree

    roots = [s["supervisor_pid"] for s in apps_up["services"].values() if s["name"] in DEMO]
    tree = process_tree(*roots)
    assert len(tree) >= 4 + 2 * 3  # supervisors and apps, engine fronts, zygotes and cores
    down = workbench("down", "chat", "search", "tinygpt", "minilm", "--json", cwd=REPO)
    assert json_data(down.stdout) == {
        name: True for name in ("chat", "search", "tinygpt", "minilm")
    }
    assert not [
        s for s in json_data(workbench("ps", "--json", cwd=REPO).stdout) if s["name"] in DEMO
    ]
    assert not process_tree(*tree)
