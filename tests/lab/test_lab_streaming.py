"""Streams through Lab's port: in one throwaway project (the textgen env built from the repo's
lock, a tiny random GPT-2 served by engine "tinygpt", the repo's chat app fronting it) under a
real `workbench lab`, the engine's SSE arrives through `<lab>/workbench/proxy/tinygpt/`
chunk by chunk with the same text as the engine's own port, and the chat app opened through
`<lab>/workbench/proxy/chat/` in Chromium shows its answer grow, then finish."""

import re
import shutil
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import openai
import pytest

from tests.support.cli import workbench
from tests.support.processes import free_port
from tests.support.projects import textgen_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("demo_envs")]

PROMPT = "The try statement"
MAX_TOKENS = 96


@dataclass
class Served:
    root: Path
    lab: str  # Lab's base URL, ending in /
    token: str
    engine_port: int

    def client(self, base_url: str, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=base_url, api_key="none", default_headers=headers)

    def through_lab(self) -> openai.OpenAI:
        return self.client(
            f"{self.lab}workbench/proxy/tinygpt/v1", Authorization=f"token {self.token}"
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("labstream") / "proj"
    root.mkdir()
    engine_port = free_port()
    (root / "workbench.toml").write_text(
        '[project]\nname = "labstream"\n\n[envs.textgen]\n'
        f'\n[engines.tinygpt]\nenv = "textgen"\nmodel = "models/tiny-gpt"\nport = {engine_port}\n'
        f'\n[apps.chat]\nenv = "textgen"\nfile = "gradio_apps/chat.py"\nport = {free_port()}\n'
        'engine = "tinygpt"\n'
        f"\n[lab]\nport = {free_port()}\n"
    )
    textgen_project(root)
    try:
        up = workbench("up", "chat", cwd=root)
        assert up.returncode == 0, up.stderr
        lab = workbench("lab", "--detach", cwd=root)
        assert lab.returncode == 0, lab.stderr
        assert "Workbench panel" in lab.stderr and "left sidebar" in lab.stderr, lab.stderr
        found = re.search(r"(http://127\.0\.0\.1:\d+/)lab\?token=(\S+)", lab.stderr)
        assert found, lab.stderr
        yield Served(root, found[1], found[2], engine_port)
    finally:
        workbench("down", cwd=root)


def timed_stream(client: openai.OpenAI) -> tuple[float, list[tuple[float, str]]]:
    """When a greedy streamed completion was asked for, and (arrival time, text) of each of
    its non-empty chunks."""
    asked = time.monotonic()
    stream = client.completions.create(
        model="tinygpt", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    chunks = [(time.monotonic(), c.choices[0].text) for c in stream if c.choices]
    return asked, [(t, text) for t, text in chunks if text]


def test_engine_sse_streams_through_labs_proxy_chunk_by_chunk(served: Served) -> None:
    direct = served.client(f"http://127.0.0.1:{served.engine_port}/v1")
    _, chunks = timed_stream(direct)
    expected = "".join(text for _, text in chunks)
    asked, chunks = timed_stream(served.through_lab())
    assert "".join(text for _, text in chunks) == expected
    assert len(chunks) >= 8, chunks
    # buffered, the first chunk would come with the last, once all tokens were generated
    first, last = chunks[0][0] - asked, chunks[-1][0] - asked
    assert first < last / 2, f"first chunk after {first:.3f} s, last after {last:.3f} s"
    # and without Lab's token the engine is not reached
    with pytest.raises(openai.APIStatusError) as refused:
        served.client(f"{served.lab}workbench/proxy/tinygpt/v1").completions.create(
            model="tinygpt", prompt=PROMPT, max_tokens=2
        )
    assert refused.value.status_code in (302, 403)


# Reads the Output box every 20 ms, from the click until it has not changed for 3 s since
# its first text (or 60 s without any): each distinct value with the time it was first seen.
WATCH = """async (box) => {
    const seen = []; let last = box.value, since = performance.now();
    while (performance.now() - since < (seen.length ? 3000 : 60000)) {
        await new Promise(r => setTimeout(r, 20));
        if (box.value !== last) {
            last = box.value; since = performance.now();
            seen.push([since, last]);
        }
    }
    return seen;
}"""


def test_chat_app_through_labs_proxy_streams_in_the_browser(served: Served, tmp_path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
        page = browser.new_page(
            viewport={"width": 1200, "height": 900},
            extra_http_headers={"Authorization": f"token {served.token}"},
        )
        page.goto(f"{served.lab}workbench/proxy/chat/")
        output = page.get_by_label("Output")
        expect(output).to_be_visible(timeout=60_000)
        page.get_by_label("Prompt").fill(PROMPT)
        page.get_by_role("button", name="Generate").click()
        seen = output.evaluate(WATCH)
        page.screenshot(path=str(tmp_path / "chat-through-lab.png"))
        browser.close()
    texts = [text for _, text in seen]
    assert len(texts) >= 2, seen
    # the answer grew while it streamed (the later read longer), then stopped
    assert all(len(a) < len(b) for a, b in pairwise(texts)), texts
    assert seen[-1][0] - seen[0][0] > 0, seen
    assert texts[-1].strip(), texts
