"""The predict engine under faults, from the machinery every task shares (workers.Pool): a
worker recycled under load fails no request, and a killed worker fails only the batch it was
running (what it held but had not begun runs on its replacement).

The pools are the real ones (zygote and forked cores in the vision env) serving the affine
handler of tests/data/handlers, fed Jobs as the front's one request path feeds them.
"""

import asyncio
import os
import shutil
import signal
import time

import pytest

from tests.support.paths import TESTS, VISION
from tests.support.pools import PoolRunner
from workbench.runtime.engine.failures import EngineFailure, Failure

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("demo_envs")]


def affine(tmp_path, **settings) -> PoolRunner:
    (tmp_path / "affine").mkdir()
    (tmp_path / "affine" / "config.json").write_text('{"scale": 2.0}')
    shutil.copy(TESTS / "data" / "handlers" / "affine.py", tmp_path / "affine.py")
    handler = f"{tmp_path / 'affine.py'}:Model"
    runner = PoolRunner(VISION, tmp_path / "affine", "predict", handler, **settings)
    runner.wait_ready()
    return runner


def test_a_recycle_under_load_fails_no_request(tmp_path) -> None:
    runner = affine(tmp_path, max_batch=8, max_requests=12)
    try:
        clients, rounds = 16, 20

        async def client(c: int) -> set[int]:
            pids = set()
            for _ in range(rounds):
                answer = await runner.run("predict", [[-0.0078125, 100 + c]])  # 8 ms each
                assert not isinstance(answer, EngineFailure), answer
                assert answer[0]["y"] == [-0.015625, 200.0 + 2 * c]
                pids.add(answer[0]["batch_pid"])
            return pids

        async def load() -> list:
            return await asyncio.gather(*(client(c) for c in range(clients)))

        pids = set().union(*runner.call(load()))
        assert runner.metrics.get("workbench_engine_recycles_total") >= 3
        assert len(pids) >= 3  # the answers came from successive workers
        assert runner.metrics.get("workbench_engine_worker_deaths_total") == 0
    finally:
        runner.close()


def test_a_killed_worker_fails_only_its_running_batch(tmp_path) -> None:
    runner = affine(tmp_path, max_batch=4)
    try:
        slow = asyncio.run_coroutine_threadsafe(
            runner.run("predict", [[-30.0, 1.0]]), runner.loop
        )  # its batch sleeps 30 s
        worker = runner.pool.workers[0]
        deadline = time.monotonic() + 30
        while not any(s.first_ns for s in worker.running.values()):
            assert time.monotonic() < deadline, "the slow batch never began"
            time.sleep(0.01)
        waiting = [
            asyncio.run_coroutine_threadsafe(runner.run("predict", [[i, 1.0]]), runner.loop)
            for i in range(3)
        ]  # sent to the busy worker: held there, not begun
        while len(worker.running) < 4:
            assert time.monotonic() < deadline, "the worker was not given the others"
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(worker.pid, signal.SIGKILL)
        failed = slow.result(60)
        assert isinstance(failed, EngineFailure) and failed.failure is Failure.WORKER_DIED
        answers = [w.result(60) for w in waiting]
        assert [a[0]["y"] for a in answers] == [[2.0 * i, 2.0] for i in range(3)]
        assert {a[0]["batch_pid"] for a in answers} != {worker.pid}
        assert runner.metrics.get("workbench_engine_worker_deaths_total") == 1
    finally:
        runner.close()
