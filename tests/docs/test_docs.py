"""The documentation site: it builds in strict mode (a broken link or a page missing from the
nav fails), its reference pages list everything the code declares (commands, options,
workbench.toml keys, WORKBENCH_* variables, metrics) and pick up what is declared next, and
the README stays short and links into it."""

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPO
from workbench import grammar, manifest, reference
from workbench.runtime import contract, stats

README_LINES = 150


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `make docs` builds it, strict, into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "WARNING" not in build.stderr, build.stderr[-3000:]
    return out


def _sections(markdown: str) -> dict[str, str]:
    """The text under each `## ` heading, by heading (backticks dropped)."""
    found: dict[str, str] = {}
    for chunk in re.split(r"^## ", markdown, flags=re.M)[1:]:
        title, _, body = chunk.partition("\n")
        found[title.strip().strip("`")] = body
    return found


def _parsers(parser: argparse.ArgumentParser, path: str = "workbench"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_site_builds_strict_with_every_page_in_the_nav(site: Path) -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["strict"] is True
    for page in ["index.md", "getting-started.md", *reference.PAGES]:
        folder = site if page == "index.md" else site / page.removesuffix(".md")
        assert (folder / "index.html").exists(), page
    home = (site / "index.html").read_text()
    assert "make demo" in home and "reference/commands/" in home


def test_every_command_and_option_is_in_the_commands_page() -> None:
    page = _sections(reference.commands_page())
    missing = []
    for path, parser in _parsers(grammar.parser()):
        if path not in page:
            missing.append(path)
            continue
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help") and f"`{flag}`" not in page[path]:
                    missing.append(f"{path} {flag}")
    assert not missing, f"in the parser but not in reference/commands.md: {missing}"


def test_every_manifest_key_is_in_the_workbench_toml_page() -> None:
    page = _sections(reference.workbench_toml())
    missing = [
        f"{table.header} {key.name}"
        for table in manifest.SCHEMA
        for key in (*table.keys, *([table.any_key] if table.any_key else []))
        if f"| `{key.name}` |" not in page.get(table.header, "")
    ]
    assert not missing, f"in manifest.py but not in reference/workbench-toml.md: {missing}"
    assert "| `max_wait_ms` |" in page["[engines.NAME]"]  # an engine setting, declared apart


def test_every_variable_is_in_the_environment_page() -> None:
    page = reference.environment()
    missing = [v.name for v in contract.VARIABLES if f"`{v.name}`" not in page]
    assert not missing, f"in runtime/contract.py but not in reference/environment.md: {missing}"


# where metrics are exported from, and string literals there named like a metric that are not
METRIC_SOURCES = ("workbench/runtime", "workbench/cluster")
NOT_METRICS = {"workbench_bound", "workbench_handler_"}


def test_every_metric_is_in_the_metrics_page() -> None:
    page = reference.metrics()
    literals = set()
    for path in (p for folder in METRIC_SOURCES for p in (REPO / folder).rglob("*.py")):
        literals.update(re.findall(r"[\"'](workbench_[a-z_]+)[\"']", path.read_text()))
    rendered = stats.Stats().render_prometheus("demo")
    literals.update(re.findall(r"^# HELP (\S+)", rendered, flags=re.M))
    missing = sorted(m for m in literals - NOT_METRICS if f"`{m}`" not in page)
    assert not missing, (
        f"metrics in workbench/ but not in reference/metrics.md: {missing} (a name that is "
        "not a metric goes into NOT_METRICS)"
    )
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if "| `" in line}
    assert "`reason`" in rows["`workbench_engine_rejected_total`"]
    assert "`lock`" in rows["`workbench_engine_info`"]


def test_what_is_declared_next_shows_up(monkeypatch, tmp_path: Path) -> None:
    """A new command, key, variable or metric reaches its page with no edit of the docs."""
    top = grammar.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    new = sub.add_parser("frobnicate", help="a command declared after the docs")
    new.add_argument("--harder", help="a flag declared after the docs")
    commands = _sections(reference._commands_markdown(reference.commands(top)))
    assert "`--harder`" in commands["workbench frobnicate"]

    key = manifest.Key("shiny", "string", "a key declared after the docs", check=str)
    table = manifest.Table("future", "A table declared after the docs.", (key,))
    monkeypatch.setattr(manifest, "SCHEMA", (*manifest.SCHEMA, table))
    assert "| `shiny` |" in _sections(reference.workbench_toml())["[future]"]

    variable = contract.Variable("WORKBENCH_SHINY", contract.text, None, "you", "New.")
    monkeypatch.setattr(contract, "VARIABLES", [*contract.VARIABLES, variable])
    assert "`WORKBENCH_SHINY`" in reference.environment()

    (tmp_path / "part.py").write_text(
        'm.declare("workbench_engine_shiny_total", "counter", "New.")\n'
        'm.inc("workbench_engine_shiny_total", colour="red")\n'
    )
    found = {m.name: m for m in reference.metrics_declared(tmp_path)}
    assert found["workbench_engine_shiny_total"].labels == ["engine", "colour"]


def test_readme_is_short_and_links_into_the_docs() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_LINES
    assert "make test" in readme and "make test-reliability" in readme
    links = [t for t in re.findall(r"\]\(([^)#]+)", readme) if "://" not in t]
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if not (REPO / link).exists()]
    assert not broken, f"README links to missing files: {broken}"


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium")
def test_home_and_reference_render_in_chromium(site: Path, tmp_path: Path) -> None:
    """What a reader sees: the home page with its navigation, and a reference table."""
    from playwright.sync_api import sync_playwright

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base)
            assert page.locator("nav.md-nav--primary").get_by_text("Reference").first.is_visible()
            page.screenshot(path=str(tmp_path / "home.png"))
            page.goto(base + "reference/workbench-toml/")
            assert page.locator("table code", has_text="max_wait_ms").first.is_visible()
            page.screenshot(path=str(tmp_path / "workbench-toml.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
