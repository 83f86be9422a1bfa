"""The Workbench extension in a real `workbench lab` of a real project: every route and
proxied path refused without Lab's token (websockets too), the CLI's envelopes with it, a
run started through the REST route recorded with its parameters, an app reached and stopped
through Lab's port, and the side panel as headless Chromium shows it (screenshots kept)."""

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import json_data, workbench
from tests.support.projects import notebook

NOTEBOOK = "notebooks/params.ipynb"
SECTIONS = ("envs", "runs", "services", "gpus")
GET_ROUTES = [
    "envs",
    "envs/check",
    "runs",
    "runs/compare?id=a&id=b",
    "services",
    "services/declared",
    "services/echo/metrics",
    "gpus",
    "jobs",
    f"notebooks/parameters?path={NOTEBOOK}",
]
POST_ROUTES = ["envs/build", "runs", "sweeps", "services/echo/start", "services/echo/stop"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None):
    """(HTTP status, parsed JSON or text) of one request, redirects not followed."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with OPENER.open(request, timeout=60) as reply:
            status, text = reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture(scope="module")
def lab(gradio_project: Path):
    """(project, Lab's base URL, token) of `workbench lab --detach` in the app project, with
    a notebook that records a metric from its parameter x."""
    root = gradio_project
    notebook(
        root / NOTEBOOK,
        "import time\ntime.sleep(2)",  # a run the panel sees in progress
        "from workbench.runtime.record import record\nrecord('double', 2 * x)",
        kernel="wb-ui",
    )
    proc = workbench("lab", "--detach", cwd=root)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"(http://127\.0\.0\.1:\d+/)lab\?token=(\S+)", proc.stderr)
    assert found, proc.stderr
    yield root, found[1], found[2]
    workbench("down", cwd=root)
    shutil.rmtree(root / "notebooks", ignore_errors=True)
    shutil.rmtree(root / "runs", ignore_errors=True)


def api(lab, path: str, method: str = "GET", body: dict | None = None):
    _root, base, token = lab
    return call(f"{base}workbench/api/{path}", method, body, token)


def wait_job(lab, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, envelope = api(lab, f"jobs/{job_id}")
        assert status == 200, envelope
        if envelope["data"]["state"] == "done":
            return envelope["data"]
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def test_every_route_and_proxied_path_refused_without_token(lab) -> None:
    _root, base, _token = lab
    for path in GET_ROUTES:
        assert call(f"{base}workbench/api/{path}")[0] == 403, path
    for path in POST_ROUTES:
        assert call(f"{base}workbench/api/{path}", "POST")[0] == 403, path
    # a proxied page sends a browser to the login page; a websocket is refused outright
    status, _ = call(f"{base}workbench/proxy/echo/")
    assert status in (302, 403)
    upgrade = urllib.request.Request(
        f"{base}workbench/proxy/echo/queue/join",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        OPENER.open(upgrade, timeout=30)
    assert refused.value.code == 403
    # a wrong token is no token
    assert call(f"{base}workbench/api/envs", token="wrong")[0] == 403


def test_routes_answer_the_cli_envelope(lab) -> None:
    root = lab[0]
    for path, argv in [
        ("envs", ["env", "list"]),
        ("runs", ["runs", "list"]),
        ("gpus", ["gpus", "list"]),
    ]:
        status, envelope = api(lab, path)
        assert status == 200, envelope
        cli = json.loads(workbench(*argv, "--json", cwd=root).stdout)
        assert envelope["schema"] == cli["schema"] == 1
        assert envelope["command"] == cli["command"]
        if path != "gpus":  # GPU figures move between two reads
            assert envelope["data"] == cli["data"], path
    status, envelope = api(lab, "services/declared")
    assert envelope["data"] == ["broken", "echo"]
    status, envelope = api(lab, f"notebooks/parameters?path={NOTEBOOK}")
    assert status == 200
    assert [p["name"] for p in envelope["data"]["parameters"]] == ["x"]
    # bad input: a one-line error in the envelope, and 400 or 404
    status, envelope = api(lab, "notebooks/parameters?path=../etc/passwd")
    assert status == 400 and "expected a path to an .ipynb" in envelope["error"]["message"]
    status, envelope = api(lab, "runs", "POST", {"notebook": "nope.ipynb"})
    assert status == 404 and "no such notebook" in envelope["error"]["message"]
    status, envelope = api(lab, "jobs/nope")
    assert status == 404 and envelope["exit_code"] == 2


def test_run_started_through_lab_lands_its_record(lab) -> None:
    root = lab[0]
    status, envelope = api(lab, "runs", "POST", {"notebook": NOTEBOOK, "parameters": {"x": 7}})
    assert status == 200, envelope
    job = wait_job(lab, envelope["data"]["id"])
    assert job["exit_code"] == 0, job["log"]
    record = job["result"]["data"]
    assert record["parameters"] == {"x": 7}
    assert record["metrics"] == {"double": 14.0}
    assert job["progress"]["cells_done"] == job["progress"]["cells_total"] >= 2
    shown = json_data(workbench("runs", "show", record["id"], "--json", cwd=root).stdout)
    assert shown["parameters"] == {"x": 7} and shown["status"] == "ok"
    # a second run, then the two compared
    status, envelope = api(lab, "runs", "POST", {"notebook": NOTEBOOK, "parameters": {"x": 2}})
    second = wait_job(lab, envelope["data"]["id"])["result"]["data"]
    status, envelope = api(lab, f"runs/compare?id={record['id']}&id={second['id']}")
    assert [r["metrics"]["double"] for r in envelope["data"]] == [14.0, 4.0]


def test_sweep_started_through_lab_is_compared(lab) -> None:
    body = {"notebook": NOTEBOOK, "parameters": {"x": "1,3"}}
    status, envelope = api(lab, "sweeps", "POST", body)
    assert status == 200, envelope
    job = wait_job(lab, envelope["data"]["id"])
    assert job["exit_code"] == 0, job["log"]
    assert sorted(r["parameters"]["x"] for r in job["runs"]) == [1, 3]
    sweep = job["result"]["data"]["sweep"]
    status, envelope = api(lab, f"runs/compare?sweep={sweep}")
    assert envelope["command"] == "runs compare" and envelope["data"]["parameters"] == ["x"]
    assert sorted(r["metrics"]["double"] for r in envelope["data"]["runs"]) == [2.0, 6.0]


def test_app_through_labs_port_then_stopped(lab) -> None:
    from gradio_client import Client

    root, base, token = lab
    status, envelope = api(lab, "services/echo/start", "POST")
    job = wait_job(lab, envelope["data"]["id"])
    assert job["exit_code"] == 0, job["log"]
    status, page = call(f"{base}workbench/proxy/echo/", token=token)
    assert status == 200
    # Gradio wrote its own URLs under the prefix (its root_path for this request)
    status, config = call(f"{base}workbench/proxy/echo/config", token=token)
    assert config["root"].rstrip("/").endswith("/workbench/proxy/echo"), config["root"]
    client = Client(
        f"{base}workbench/proxy/echo/",
        headers={"Authorization": f"token {token}"},
        verbose=False,
    )
    assert client.predict("hi", api_name="/echo") == "HI"
    status, envelope = api(lab, "services")
    echo = next(s for s in envelope["data"] if s["name"] == "echo")
    assert echo["proxy"] == "/workbench/proxy/echo/"
    # the ssh line: Lab's port alone first, each port for clients that need one
    printed = json_data(workbench("tunnel", "--print", "--json", cwd=root).stdout)
    lab_port = int(re.search(r":(\d+)/", base)[1])
    assert printed["ssh_lab"].count(" -L ") == 1 and f":{lab_port}" in printed["ssh_lab"]
    assert printed["proxied"]["echo"] == f"http://127.0.0.1:{lab_port}/workbench/proxy/echo/"
    status, envelope = api(lab, "services/echo/stop", "POST")
    assert wait_job(lab, envelope["data"]["id"])["exit_code"] == 0
    status, envelope = api(lab, "services")
    assert "echo" not in [s["name"] for s in envelope["data"]]


def test_panel_runs_compares_opens_and_stops(lab, tmp_path: Path) -> None:
    """In the browser: the panel lists envs, runs and services; "Run as recorded run…" on
    the notebook's toolbar records the form's parameter and shows cells done; two runs
    compared show their metric; an app started from the panel answers in a Lab tab through
    Lab's port; Stop stops it. Screenshots land in tmp_path."""
    from playwright.sync_api import expect, sync_playwright

    root, base, token = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}lab/tree/{NOTEBOOK}?token={token}")
        page.click('.jp-SideBar li[data-id="workbench-panel"]', timeout=120_000)
        panel = page.locator("#workbench-panel")
        section = {n: panel.locator(f'.wb-section[data-section="{n}"]') for n in SECTIONS}
        expect(section["envs"].locator('.wb-row[data-name="ui"] .wb-status')).to_have_text(
            "built", timeout=60_000
        )
        expect(section["services"].locator('.wb-row[data-name="lab"]')).to_be_visible()
        page.screenshot(path=str(tmp_path / "panel.png"))

        # a recorded run from the notebook's toolbar, with the form's value
        page.locator('[data-jp-item-name="workbench-run"]').click(timeout=60_000)
        page.fill('.wb-run-form input[name="x"]', "5")
        page.click(".jp-Dialog .jp-mod-accept")
        job = panel.locator(".wb-job").first
        expect(job.locator(".wb-job-cells")).to_contain_text("cells", timeout=120_000)
        expect(job.locator(".wb-status")).to_have_text("done", timeout=240_000)
        newest = json_data(workbench("runs", "list", "--json", cwd=root).stdout)[-1]
        assert newest["parameters"] == {"x": 5} and newest["metrics"] == {"double": 10.0}
        page.screenshot(path=str(tmp_path / "panel-run.png"))

        # two runs compared
        runs = section["runs"]
        expect(runs.locator(f'.wb-row[data-name="{newest["id"]}"]')).to_be_visible(timeout=30_000)
        runs.locator("input.wb-pick").nth(0).check()
        runs.locator("input.wb-pick").nth(1).check()
        runs.locator('button[data-action="compare"]').click()
        compared = runs.locator('.wb-compare .wb-metric[data-metric="double"]')
        expect(compared).to_contain_text("10", timeout=30_000)
        expect(runs.locator(".wb-compare svg.wb-plot")).to_be_visible()
        page.screenshot(path=str(tmp_path / "panel-compare.png"))

        # an app started from the panel, opened in a Lab tab through Lab's port, stopped
        services = section["services"]
        services.locator('.wb-row[data-name="echo"] button[data-action="start"]').click()
        echo = services.locator('tr.wb-row[data-name="echo"]')
        expect(echo.locator(".wb-status")).to_have_text("healthy", timeout=240_000)
        echo.locator('button[data-action="open"]').click()
        app = page.frame_locator("iframe.wb-frame")
        app.get_by_label("text").fill("hi")
        app.get_by_label("text").press("Enter")
        expect(app.get_by_label("shouted")).to_have_value("HI", timeout=60_000)
        page.screenshot(path=str(tmp_path / "app-through-lab.png"))
        echo.locator('button[data-action="stop"]').click()
        expect(echo).to_have_count(0, timeout=120_000)
        browser.close()
    listed = json_data(workbench("ps", "--json", cwd=root).stdout)
    assert "echo" not in [s["name"] for s in listed]
