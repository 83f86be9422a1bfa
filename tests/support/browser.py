"""What a person sees: a page rendered by headless Chromium."""

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


def chromium_page(url: str, tmp: Path, screenshot: str, budget_ms: int, timeout: float) -> str:
    """The page after its client-side rendering, as headless Chromium sees it with its own
    empty profile under tmp: a screenshot (tmp/screenshot), and the DOM, returned."""
    env = {
        **os.environ,
        "HOME": str(tmp),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
    }
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1280,900",
    ]
    run = {"env": env, "capture_output": True, "timeout": timeout, "check": True}
    subprocess.run([*args, f"--screenshot={tmp / screenshot}", url], **run)
    return subprocess.run([*args, "--dump-dom", url], text=True, **run).stdout
