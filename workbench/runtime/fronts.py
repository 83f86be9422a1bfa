"""What a Gradio app that fronts an engine needs to reach it: the engine's URL, model name
and key (from the environment `workbench up` or an image's launcher gives the app), and a
wait until the engine is healthy.

    from workbench.runtime import fronts
    engine = fronts.engine(default_url="http://127.0.0.1:8000/v1", default_model="tinygpt")
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from workbench.runtime import apikeys, contract


@dataclass(frozen=True)
class Engine:
    url: str  # ends in /v1
    model: str
    key: str | None
    wait_s: float  # how long warm-up waits for the engine to be healthy

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    @property
    def root(self) -> str:
        """The engine's URL without /v1: where /healthz, /predict and /v2 are."""
        return self.url.rsplit("/v1", 1)[0]

    def wait_healthy(self) -> None:
        """Block until the engine's /healthz answers 200 (it may still load its model);
        RuntimeError naming the URL after wait_s seconds."""
        health = self.root + "/healthz"
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                with urllib.request.urlopen(health, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the engine at {self.url} was not healthy in {self.wait_s:g} s")
            time.sleep(0.2)


def engine(default_url: str, default_model: str) -> Engine:
    """The engine this app fronts: WORKBENCH_ENGINE_URL, WORKBENCH_ENGINE_MODEL,
    WORKBENCH_ENGINE_KEY (else the first of WORKBENCH_API_KEYS: the keys the engine checks,
    where both run side by side, as in an image) and WORKBENCH_ENGINE_WAIT_S (120)."""
    keys = apikeys.read(None)
    return Engine(
        url=(contract.ENGINE_URL.get() or default_url).rstrip("/"),
        model=contract.ENGINE_MODEL.get() or default_model,
        key=contract.ENGINE_KEY.get() or (keys[0] if keys else None),
        wait_s=contract.ENGINE_WAIT_S.get(),
    )
