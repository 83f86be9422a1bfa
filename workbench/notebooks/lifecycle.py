"""One run's lifecycle, the same for `workbench run` and for stock `papermill --engine
workbench`: the record is saved (status running) before the kernel starts, and completed
however the run ends: ok, failed, regressed, timeout or interrupted. The output notebook
then names the kernel that actually ran and holds no secret parameter value."""

import json
from pathlib import Path
from types import TracebackType

from workbench.errors import WorkbenchError
from workbench.notebooks import baselines, records
from workbench.notebooks.records import RunRecord, RunStatus
from workbench.project import Project


class RunTimeout(BaseException):
    """Raised in the main thread when a run outlives its timeout (BaseException so that
    nothing on the way swallows it)."""


class RecordedRun:
    """Context manager around one execution. The engine hands it the executing notebook
    (nb); without one, the end state is read from the output file papermill saved."""

    def __init__(self, project: Project, record: RunRecord, notebook: Path):
        self.project, self.record = project, record
        self.bounds = baselines.load(notebook, record.preset or "default")  # checked early
        self.nb: dict | None = None

    @property
    def output(self) -> Path | None:
        return self.project.root / self.record.output if self.record.output else None

    def __enter__(self) -> "RecordedRun":
        self.record.save(self.project)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        nb = self.nb if self.nb is not None else self._saved_output()
        record = self.record
        record.status, record.error = _outcome(exc, nb)
        records.finish(record, nb)
        if nb:
            _name_kernel(nb, record)
            records.redact_notebook(nb)
            if self.output is not None:
                self.output.write_text(json.dumps(nb, indent=1) + "\n")
        if record.status == RunStatus.OK:
            record.baselines = baselines.check(record.metrics, self.bounds)
            if not all(b["ok"] for b in record.baselines):
                record.status = RunStatus.REGRESSED
        record.save(self.project)
        return False

    def _saved_output(self) -> dict:
        try:
            return json.loads(self.output.read_text()) if self.output else {}
        except (OSError, ValueError):
            return {}


def _outcome(exc: BaseException | None, nb: dict) -> tuple[RunStatus, dict | None]:
    """How the run ended, from what escaped it, or else from the notebook's outputs."""
    from papermill.exceptions import PapermillExecutionError

    if exc is None:
        return (RunStatus.FAILED, None) if records.error_of(nb) else (RunStatus.OK, None)
    if isinstance(exc, PapermillExecutionError):
        return RunStatus.FAILED, {"ename": exc.ename, "evalue": exc.evalue}
    if isinstance(exc, RunTimeout):
        return RunStatus.TIMEOUT, {"ename": "Timeout", "evalue": str(exc)}
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.INTERRUPTED, {"ename": "KeyboardInterrupt", "evalue": "interrupted"}
    # a dead kernel, a kernel that never started, ...
    message = exc.message if isinstance(exc, WorkbenchError) else str(exc).strip()
    first = message.splitlines()[0] if message else type(exc).__name__
    return RunStatus.FAILED, {"ename": type(exc).__name__, "evalue": first}


def _name_kernel(nb: dict, record: RunRecord) -> None:
    """Name the kernel that actually ran: papermill keeps the input's (nteract/papermill#856)."""
    meta = nb.setdefault("metadata", {})
    minor = meta.get("language_info", {}).get("version", "")[:4].rstrip(".")
    display = f"Python {minor} ({record.env})" if minor else record.kernel
    meta["kernelspec"] = {"name": record.kernel, "display_name": display, "language": "python"}
    meta["workbench_run"] = {"id": record.id, "env": record.env}


def any_cell_ran(nb: dict) -> bool:
    cells = nb.get("cells", [])
    return any(c.get("execution_count") for c in cells if c.get("cell_type") == "code")
