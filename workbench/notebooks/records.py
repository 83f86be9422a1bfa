"""Run records: what ran, with what, and how it ended, under runs/<id>/record.json."""

import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from workbench.errors import WorkbenchError, excerpt
from workbench.jsonfiles import StateFile
from workbench.project import Project
from workbench.runtime.record import METRIC_MIME
from workbench.subprocesses import run

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ARROW = re.compile(r"^\s*-*>\s*(\d+)\s(.*)$")

# Cells papermill adds to an output notebook: not counted when naming the failing cell.
ADDED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}

# A parameter holds a credential when its name ends in one of these words (hf_token,
# api_key, db_password, client_secret); a tokenizer's special tokens (pad_token) do not.
SECRET_WORDS = {"token", "password", "passwd", "secret", "credential", "credentials", "auth"}
SECRET_PAIRS = {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key")}
SPECIAL_TOKENS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask"}
REDACTED = "<redacted>"


class RunStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"  # a cell raised, or the kernel died or never started
    REGRESSED = "regressed"  # ran through, but a metric is outside its baseline
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"


@dataclass
class RunRecord(StateFile):
    id: str
    notebook: str
    output: str
    parameters: dict
    preset: str | None
    env: str
    kernel: str
    spec_hash: str | None
    lock_hash: str | None
    git_commit: str | None
    git_dirty: bool | None
    started: float
    ended: float | None = None
    seconds: float | None = None
    status: str = RunStatus.RUNNING
    error: dict | None = None
    metrics: dict = field(default_factory=dict)
    baselines: list = field(default_factory=list)
    gpus: list[str] | None = None  # CUDA_VISIBLE_DEVICES the kernel got (None: left alone)
    sweep: str | None = None  # the sweep this run belongs to
    node: str | None = None  # the Ray node it ran on (cluster sweeps)
    attempts: list = field(default_factory=list)  # earlier tries lost with their node

    def path(self, project: Project) -> Path:
        return project.runs_dir / self.id / "record.json"

    def save(self, project: Project) -> None:
        target = self.path(project)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.write(target)

    def to_json(self) -> dict:
        """The record as stored and shown: secret-looking parameter values redacted."""
        return {"version": self.VERSION, **asdict(self), "parameters": redacted(self.parameters)}

    def summary(self) -> str:
        """One line: ok, or which metric regressed, or where and why the run failed."""
        if self.status == RunStatus.OK:
            return "ok"
        failed = [b for b in self.baselines if not b["ok"]]
        if failed:
            return "regressed: " + "; ".join(
                f"{b['metric']} = {b['value']} (expected {b['bound']})" for b in failed
            )
        error = self.error or {}
        return f"{self.status} at {_cell_name(error)}: {error.get('ename')}: {error.get('evalue')}"


def _cell_name(error: dict) -> str:
    """The failing cell as Jupyter shows it (`Cell In[4], line 2`) and the first line of
    its source; user text is quoted, never put in parentheses it may leave open."""
    if "cell" not in error:
        return "run"
    count = error.get("execution_count")
    name = f"Cell In[{count}]" if isinstance(count, int) else f"cell {error['cell']}"
    line = re.match(r"line (\d+)", error.get("line") or "")
    first = (error.get("first_line") or "").strip()
    return (
        name + (f", line {line[1]}" if line else "") + (f' "{excerpt(first, 60)}"' if first else "")
    )


def is_secret(name: str) -> bool:
    """Whether a parameter's name says it holds a credential (hf_token, apiKey, password)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().split("_")
    words = [w for w in words if w]
    if not words:
        return False
    if words[-1] == "token" and len(words) > 1 and words[-2] in SPECIAL_TOKENS:
        return False
    return words[-1] in SECRET_WORDS or tuple(words[-2:]) in SECRET_PAIRS or words[-1] == "apikey"


def redacted(parameters: dict) -> dict:
    """parameters with the string values of secret-looking names replaced by REDACTED."""
    return {
        name: REDACTED if isinstance(value, str) and value and is_secret(name) else value
        for name, value in parameters.items()
    }


def secret_parameters(nb: dict) -> set[str]:
    """Names of the parameters papermill injected into nb whose values are secret."""
    params = nb.get("metadata", {}).get("papermill", {}).get("parameters") or {}
    return {n for n, v in params.items() if redacted({n: v})[n] is not v}  # NaN != NaN


def redact_notebook(nb: dict) -> None:
    """Remove secret parameter values from an output notebook: papermill keeps them in its
    metadata and in the cell it injected (one `name = value` line per parameter)."""
    secret = secret_parameters(nb)
    if not secret:
        return
    meta = nb["metadata"]["papermill"]
    meta["parameters"] = redacted(meta["parameters"])
    for cell in nb.get("cells", []):
        if "injected-parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell.get("source", "")
        lines = source.splitlines(keepends=True) if isinstance(source, str) else list(source)
        for i, line in enumerate(lines):
            name = line.split("=", 1)[0].strip()
            if "=" in line and name in secret:
                lines[i] = f"{name} = {REDACTED!r}" + ("\n" if line.endswith("\n") else "")
        cell["source"] = "".join(lines) if isinstance(source, str) else lines


def start(
    project: Project,
    source: Path,
    env: str,
    kernel: str,
    parameters: dict,
    preset: str | None = None,
    output: str | None = None,
) -> RunRecord:
    """A record for a run about to start, with the env's hashes and the git state.

    output defaults to runs/<id>/<notebook name>.
    """
    from workbench.envs import builds

    prefix = builds.active_prefix(project, env) if env in project.envs else None
    built = builds.EnvRecord.of(prefix) if prefix else None
    commit, dirty = git_state(project.root)
    run_id = new_id(source)
    return RunRecord(
        id=run_id,
        notebook=_relative(project, source),
        output=output or f"runs/{run_id}/{source.name}",
        parameters=parameters,
        preset=preset,
        env=env,
        kernel=kernel,
        spec_hash=built.spec_hash if built else None,
        lock_hash=built.lock_hash if built else None,
        git_commit=commit,
        git_dirty=dirty,
        started=time.time(),
    )


def finish(record: RunRecord, nb: dict) -> None:
    """End time, metrics and the failing cell, from the (possibly partial) output notebook."""
    record.ended = time.time()
    record.seconds = round(record.ended - record.started, 3)
    record.metrics = metrics_of(nb)
    cell_error = error_of(nb)
    if cell_error and record.status != RunStatus.OK:
        record.error = {**cell_error, **(record.error or {})}


def _relative(project: Project, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(project.root))
    except ValueError:
        return str(path.resolve())


def new_id(notebook: Path) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{notebook.stem}-{secrets.token_hex(2)}"


def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the project's git checkout, or (None, None) outside git."""
    try:
        commit = run(["git", "rev-parse", "HEAD"], what="git", cwd=root, timeout=10, check=False)
        if commit.returncode != 0:
            return None, None
        status = run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            what="git status",
            cwd=root,
            timeout=10,
        )
    except WorkbenchError:  # no git here, or it hung
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def metrics_of(nb: dict) -> dict:
    """Metrics recorded with workbench.record in a (possibly partial) output notebook."""
    found: dict = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            metric = (output.get("data") or {}).get(METRIC_MIME)
            if isinstance(metric, dict) and "name" in metric:
                found[str(metric["name"])] = metric.get("value")
    return found


def error_of(nb: dict) -> dict | None:
    """The first error in an output notebook: cell number, source line, traceback."""
    injected = 0
    for index, cell in enumerate(nb.get("cells", [])):
        if ADDED_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            injected += 1
            continue
        for output in cell.get("outputs", []) or []:
            if output.get("output_type") == "error":
                traceback = [ANSI.sub("", line) for line in output.get("traceback", [])]
                source = cell.get("source", "")
                source = "".join(source) if isinstance(source, list) else str(source)
                return {
                    "cell": index + 1 - injected,  # 1-based, as in the notebook the user wrote
                    "execution_count": cell.get("execution_count"),
                    "ename": output.get("ename"),
                    "evalue": output.get("evalue"),
                    "line": _failing_line(traceback, source),
                    "first_line": next((s for s in source.splitlines() if s.strip()), ""),
                    "traceback": "\n".join(traceback),
                }
    return None


def _failing_line(traceback: list[str], source: str) -> str | None:
    """The source line IPython's traceback points at with its arrow, in the cell itself."""
    for block in traceback:
        for line in block.splitlines():
            match = ARROW.match(line)
            if match:
                return f"line {match[1]}: {match[2].strip()}"
    lines = source.strip().splitlines() if isinstance(source, str) else []
    return f"last line: {lines[-1]}" if lines else None


def listed(project: Project) -> list[RunRecord]:
    """Every run record, oldest first; unreadable ones are skipped."""
    folder = project.runs_dir
    paths = sorted(folder.glob("*/record.json")) if folder.is_dir() else []
    records = [r for r in map(RunRecord.read, paths) if r is not None]
    return sorted(records, key=lambda r: r.started)


def find(project: Project, run_id: str) -> RunRecord:
    """The run whose id is run_id or starts with it (unambiguously)."""
    matches = [r for r in listed(project) if r.id == run_id or r.id.startswith(run_id)]
    exact = [r for r in matches if r.id == run_id]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise WorkbenchError(
            f"no run '{run_id}' under {project.runs_dir} (see `workbench runs list`)"
        )
    raise WorkbenchError(f"run id '{run_id}' is ambiguous: {', '.join(r.id for r in matches[:5])}")
