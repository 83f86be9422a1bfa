"""An engine's pool of cores driven without HTTP: the real zygote and workers in a model's env,
fed Jobs as the front's one request path feeds them (Engine.run_task: submit a Stream, wait
for it to settle), from an event loop of its own in a thread."""

import asyncio
import itertools
import logging
import threading
import time

from workbench.runtime.engine.failures import EngineFailure
from workbench.runtime.engine.metrics import Registry
from workbench.runtime.engine.workers import Pool, Settings, Stream

START_TIMEOUT = 240
_ids = itertools.count()


class PoolRunner:
    def __init__(self, python, model, task: str, handler: str = "", **settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        values = {"workers": 1, "max_wait_ms": 10.0, **settings}
        self.settings = Settings(
            name=task, model=str(model), task=task, handler=handler, devices=[None], **values
        )
        self.metrics = Registry(task)
        self.pool = Pool(self.settings, self.metrics, logging.getLogger("test-pool"), str(python))
        self.pool.start_zygote()
        self.pool.start_workers()
        self.call(self.pool.attach())

    def call(self, coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.pool.ready:
            assert not self.pool.failed, self.pool.failed
            assert time.monotonic() < deadline, "the pool did not get ready"
            time.sleep(0.05)

    async def run(self, kind: str, inputs: list, params: dict | None = None) -> object:
        """The result of one request, or its EngineFailure."""
        stream = Stream(f"t-{next(_ids)}", kind, inputs, params or {}, 0, self.settings.timeout)
        try:
            self.pool.submit(stream)
        except EngineFailure as failed:
            return failed
        await stream.settle()
        return stream.failure if stream.failure is not None else stream.result

    def predict(self, inputs: list, params: dict | None = None) -> object:
        return self.call(self.run("predict", inputs, params))

    def many(self, requests: list[tuple[list, dict]]) -> list:
        """Requests sent together, each its own answer (or failure)."""

        async def together():
            return await asyncio.gather(*(self.run("predict", i, p) for i, p in requests))

        return self.call(together())

    def close(self) -> None:
        try:
            self.call(self.pool.close(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
