"""Long work started from Lab (`env create`, `run`, `sweep`, `up`, `down`): the CLI itself
in a background subprocess, so a run started here lands the same record as one started in a
terminal. Its stderr goes to a log the panel reads by offset; its stdout is the --json
envelope, read once it exits. Jobs live as long as the Lab that started them."""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_CHUNK = 64 * 1024  # the most log one poll returns


@dataclass
class Job:
    id: str
    argv: list[str]
    started: float
    log_path: Path
    out_path: Path
    process: subprocess.Popen
    ended: float | None = None
    exit_code: int | None = None
    notebook: str | None = None  # run and sweep: the notebook, relative to the project
    result: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        return " ".join(a for a in self.argv[:2] if not a.startswith("-"))

    def poll(self) -> None:
        """Notice the exit, and read the envelope the command printed."""
        if self.exit_code is not None:
            return
        code = self.process.poll()
        if code is None:
            return
        self.exit_code, self.ended = code, time.time()
        try:
            self.result = json.loads(self.out_path.read_text())
        except (OSError, ValueError):
            self.result = None  # killed before it printed; the log says why

    def log_from(self, offset: int) -> tuple[str, int]:
        """Log text from byte offset on (at most LOG_CHUNK) and the offset after it."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, offset))
                chunk = f.read(LOG_CHUNK)
        except OSError:
            return "", offset
        return chunk.decode("utf-8", "replace"), max(0, offset) + len(chunk)

    def to_json(self, offset: int = 0) -> dict:
        self.poll()
        log, next_offset = self.log_from(offset)
        return {
            "id": self.id,
            "command": self.command,
            "argv": self.argv,
            "state": "running" if self.exit_code is None else "done",
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "log": log,
            "offset": next_offset,
            "result": self.result,
            **self.extra,
        }


class Jobs:
    """The jobs one Lab started, each a `workbench ... --json` subprocess in project."""

    def __init__(self, project: Path):
        self.project = project
        self.folder = project / ".workbench" / "lab" / "jobs"
        self.jobs: dict[str, Job] = {}

    def start(self, argv: list[str], notebook: str | None = None) -> Job:
        self.folder.mkdir(parents=True, exist_ok=True)
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        log_path, out_path = self.folder / f"{job_id}.log", self.folder / f"{job_id}.json"
        # Lab's token stays with Lab; the CLI needs none of it.
        env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN",)}
        command = [
            sys.executable,
            "-m",
            "workbench",
            *argv,
            "--json",
            "--project",
            str(self.project),
        ]
        with log_path.open("wb") as log, out_path.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=self.project,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,  # stopping the job stops its kernel too
            )
        job = Job(job_id, argv, time.time(), log_path, out_path, process, notebook=notebook)
        self.jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def stop(self, job: Job) -> None:
        """SIGTERM to the job's process group: the CLI unwinds as on Ctrl-C (a run's
        record lands "interrupted")."""
        job.poll()
        if job.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGTERM)

    def listed(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: j.started)
