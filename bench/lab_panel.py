"""How long the Workbench side panel takes to show a project's runs with 500 runs recorded:
a throwaway project, 500 valid run records written through the records module, a real
`workbench lab --detach`, Debian's Chromium through Playwright. Prints the REST read of
`runs`, the time from the click on the panel's tab to the runs listed, and from opening Lab's
page to the runs listed (medians of 3)."""

import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 500  # `lab_panel.py 1`: the baseline


def records(root: Path) -> None:
    from workbench import project as projects
    from workbench.notebooks import records

    project = projects.load(root)
    started = time.time() - RUNS * 60
    for i in range(RUNS):
        record = records.RunRecord(
            id=f"20260101-{i:06d}-train",
            notebook="notebooks/train.ipynb",
            output=f"runs/20260101-{i:06d}-train/train.ipynb",
            parameters={"lr": 0.001 * (i % 10 + 1), "steps": 100 + i},
            preset=None,
            env="tiny",
            kernel="wb-tiny",
            spec_hash=None,
            lock_hash=None,
            git_commit=None,
            git_dirty=None,
            started=started + i * 60,
            ended=started + i * 60 + 30,
            seconds=30.0,
            status=records.RunStatus.OK,
            metrics={"loss": 1.0 / (i + 1), "accuracy": i / RUNS},
        )
        record.save(project)


def main() -> None:
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="wb-lab-bench-"))
    (root / "envs").mkdir()
    (root / "workbench.toml").write_text('[project]\nname = "labbench"\n')
    records(root)
    wb = [sys.executable, "-m", "workbench"]
    started = subprocess.run([*wb, "lab", "--detach"], cwd=root, capture_output=True, text=True)
    found = re.search(r"(http://127\.0\.0\.1:\d+/)lab\?token=(\S+)", started.stderr)
    assert found, started.stderr
    base, token = found[1], found[2]
    try:
        rest = []
        for _ in range(3):
            t0 = time.perf_counter()
            request = urllib.request.Request(
                f"{base}workbench/api/runs", headers={"Authorization": f"token {token}"}
            )
            with urllib.request.urlopen(request, timeout=60) as reply:
                reply.read()
            rest.append(time.perf_counter() - t0)
        shown, loaded = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium")
            for _ in range(3):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                t_open = time.perf_counter()
                page.goto(f"{base}lab?token={token}")
                tab = page.locator('.jp-SideBar li[data-id="workbench-panel"]')
                tab.wait_for(timeout=120_000)
                t0 = time.perf_counter()
                tab.click()
                page.get_by_text(f"{RUNS} runs").wait_for(timeout=120_000)
                shown.append(time.perf_counter() - t0)
                loaded.append(time.perf_counter() - t_open)
                page.close()
            browser.close()
    finally:
        subprocess.run([*wb, "down"], cwd=root, capture_output=True)
    print(f"runs recorded: {RUNS}")
    print(f"GET workbench/api/runs: median {statistics.median(rest):.3f} s")
    print(f"panel tab clicked -> {RUNS} runs listed: median {statistics.median(shown):.2f} s")
    print(f"Lab opened -> panel clicked -> runs listed: median {statistics.median(loaded):.2f} s")


if __name__ == "__main__":
    main()
