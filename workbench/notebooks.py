"""Running notebooks in their env kernels with papermill, and recording the run.

Stages: resolve the kernel (the notebook's own, or --env's), check the parameters
against the notebook's `parameters` cell before any kernel starts, execute with
papermill (which saves the output notebook after every cell), then write the record,
whatever happened: ok, failed, regressed, timeout or interrupted.
"""

import ast
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from workbench import baselines, envs, runs
from workbench.errors import CHECK_FAILED, WorkbenchError, excerpt
from workbench.kernels import PREFIX
from workbench.project import Project

INTERRUPTED = 130
PRESET_KEY = "workbench"
# Values in one list or dict parameter, counting each use of a YAML alias; and the length
# of a value read as YAML (the most one command-line argument holds, 128 KiB).
MAX_PARAMETER_VALUES = 100_000
MAX_PARAMETER_YAML = 128 * 1024


class RunTimeout(BaseException):
    """Raised in the main thread when a run outlives its timeout (BaseException so that
    nothing on the way swallows it)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # papermill's inferred type name: int, float, bool, str, list, dict, None
    default: str
    help: str

    def describe(self) -> str:
        return f"{self.name} ({self.type}, default {self.default})"


def read(path: Path) -> dict:
    """The notebook as a dict, or a one-line error."""
    import nbformat

    if not path.is_file():
        raise WorkbenchError(f"{path}: no such notebook")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types
        raise WorkbenchError(f"{path}: not a readable notebook: {exc}") from None


def parameters(path: Path) -> dict[str, Parameter]:
    """The parameters the notebook's `parameters` cell declares."""
    from papermill import inspect_notebook

    declared = inspect_notebook(str(path))
    return {
        name: Parameter(name, _type_of(p), str(p.get("default")), str(p.get("help") or ""))
        for name, p in declared.items()
    }


def _type_of(param: dict) -> str:
    """The annotated type (`steps: int = 3`), else the type of the default's literal."""
    annotated = str(param.get("inferred_type_name") or "None")
    if annotated != "None":
        return annotated
    try:
        return type(ast.literal_eval(str(param.get("default")))).__name__
    except (ValueError, SyntaxError):
        return "None"


def coerce(path: Path, declared: dict[str, Parameter], raw: dict[str, object]) -> dict:
    """Typed parameter values; unknown names and ill-typed values are refused."""
    valid = "; ".join(p.describe() for p in declared.values()) or "none"
    values = {}
    for name, value in raw.items():
        if name not in declared:
            raise WorkbenchError(
                f"{path.name}: unknown parameter '{excerpt(name)}' (valid: {valid})"
            )
        values[name] = _typed(path, declared[name], value)
    return values


def _typed(path: Path, param: Parameter, value: object) -> object:
    where = f"{path.name}: parameter {param.name}={excerpt(repr(value))}"
    if not isinstance(value, str):
        return value  # already typed (a preset from the notebook's metadata)
    kind = param.type.lower()
    try:
        value.encode()  # undecodable bytes on the command line arrive as lone surrogates
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            lowered = value.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if kind in ("str", "string"):
            return value
        if len(value) > MAX_PARAMETER_YAML:
            raise WorkbenchError(
                f"{where}: expected {param.type} ({param.describe()}) of at most "
                f"{MAX_PARAMETER_YAML // 1024} KiB, not {len(value)} characters"
            )
        parsed = yaml.safe_load(value)
        container = kind in ("list", "dict", "tuple")
        wrong = type(parsed).__name__ != kind and not (kind == "tuple" and isinstance(parsed, list))
        if (container and wrong) or not _literal(parsed):
            raise ValueError(value)
        return parsed
    except (ValueError, yaml.YAMLError, RecursionError):
        raise WorkbenchError(f"{where}: expected {param.type} ({param.describe()})") from None


def _literal(value: object) -> bool:
    """Whether papermill writes value as a Python literal: str, int, float, bool, None and
    lists and str-keyed dicts of them, of bounded size. YAML's !!set, !!binary and dates
    are not (papermill would paste their str() between quotes, unescaped), nor aliases that
    expand without bound."""
    todo, count = [value], 0
    while todo:
        item = todo.pop()
        count += 1
        if count > MAX_PARAMETER_VALUES:
            return False
        if isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, str):
            try:
                item.encode()  # YAML's "\ud800" is a lone surrogate: no notebook can hold it
            except UnicodeEncodeError:
                return False
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                str(item)  # a hex literal can exceed the digits str() will write
            except ValueError:
                return False
        elif item is not None and not isinstance(item, float | bool):
            return False
    return True


def presets(nb: dict) -> dict[str, dict]:
    """Named parameter sets kept in the notebook's metadata (e.g. "smoke", "demo")."""
    meta = nb.get("metadata", {}).get(PRESET_KEY, {})
    return {k: v for k, v in meta.items() if isinstance(v, dict)}


def resolve_env(project: Project, path: Path, nb: dict, env: str | None) -> tuple[str, str]:
    """(env name, kernel name) for the run: --env's, else the notebook's kernelspec."""
    if env is None:
        kernel = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
        if not kernel:
            raise WorkbenchError(f"{path}: the notebook names no kernel; pass --env NAME")
        if not kernel.startswith(PREFIX) or kernel[len(PREFIX) :] not in project.envs:
            known = ", ".join(sorted(project.envs)) or "none"
            raise WorkbenchError(
                f"{path}: kernel '{kernel}' is not a project env kernel; pass --env NAME "
                f"(envs: {known})"
            )
        env = kernel[len(PREFIX) :]
    envs.require_built(project, env)
    return env, f"{PREFIX}{env}"


@dataclass
class RunRequest:
    notebook: Path
    parameters: dict
    preset: str | None
    env: str | None = None
    timeout: float | None = None
    progress_bar: bool = False


def prepare(project: Project, request: RunRequest) -> runs.RunRecord:
    """Everything checked before a kernel starts; returns the new run's record."""
    path = request.notebook
    nb = read(path)
    env, kernel = resolve_env(project, path, nb, request.env)
    declared = parameters(path)
    raw: dict = {}
    if request.preset:
        available = presets(nb)
        if request.preset not in available:
            names = ", ".join(sorted(available)) or "none"
            raise WorkbenchError(f"{path.name}: no preset '{request.preset}' (presets: {names})")
        raw.update(available[request.preset])
    raw.update(request.parameters)
    values = coerce(path, declared, raw)
    return runs.start(project, path, env, kernel, values, preset=request.preset)


def execute(project: Project, request: RunRequest) -> tuple[runs.RunRecord, int]:
    """Run the notebook and write its record; returns the record and the exit code."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    record = prepare(project, request)
    record.save(project)
    output = project.root / record.output
    code = 0
    try:
        with _deadline(request.timeout), _jupyter_path(project):
            papermill.execute_notebook(
                str(request.notebook),
                str(output),
                parameters=record.parameters,
                kernel_name=record.kernel,
                cwd=str(request.notebook.parent),
                progress_bar=request.progress_bar,
                start_timeout=120,
            )
        record.status = "ok"
    except PapermillExecutionError as exc:
        record.status, code = "failed", CHECK_FAILED
        record.error = {"ename": exc.ename, "evalue": exc.evalue}
    except RunTimeout:
        record.status, code = "timeout", CHECK_FAILED
        record.error = {"ename": "Timeout", "evalue": f"run exceeded {request.timeout:g} s"}
    except KeyboardInterrupt:
        record.status, code = "interrupted", INTERRUPTED
        record.error = {"ename": "KeyboardInterrupt", "evalue": "interrupted"}
    except Exception as exc:  # a dead kernel, a kernel that never started, ...
        record.status, code = "failed", CHECK_FAILED
        record.error = {
            "ename": type(exc).__name__,
            "evalue": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        }
    finally:
        _finish(project, record, output)
    if code == CHECK_FAILED and record.status == "failed" and not _any_cell_ran(output):
        # Nothing ran: the kernel never came up. That is the env's problem, not the notebook's.
        raise WorkbenchError(
            f"kernel {record.kernel} could not start ({record.error['ename']}: "
            f"{record.error['evalue']}); rebuild it with `workbench env create {record.env} "
            f"--force` (run record: runs/{record.id}/)"
        )
    if record.status == "ok":
        section = record.preset or "default"
        record.baselines = baselines.check(
            record.metrics, baselines.load(request.notebook, section)
        )
        if not all(b["ok"] for b in record.baselines):
            record.status, code = "regressed", CHECK_FAILED
        record.save(project)
    return record, code


def _finish(project: Project, record: runs.RunRecord, output: Path) -> None:
    """Complete the record from the (possibly partial) output notebook and save both,
    secret parameter values removed."""
    nb = json.loads(output.read_text()) if output.is_file() else {}
    runs.finish(record, nb)
    if nb:
        _fix_kernelspec(nb, record)
        runs.redact_notebook(nb)
        output.write_text(json.dumps(nb, indent=1) + "\n")
    record.save(project)


def _any_cell_ran(output: Path) -> bool:
    if not output.is_file():
        return False
    cells = json.loads(output.read_text()).get("cells", [])
    return any(c.get("execution_count") for c in cells if c.get("cell_type") == "code")


def _fix_kernelspec(nb: dict, record: runs.RunRecord) -> None:
    """Name the kernel that actually ran: papermill keeps the input's (nteract/papermill#856)."""
    meta = nb.setdefault("metadata", {})
    minor = meta.get("language_info", {}).get("version", "")[:4].rstrip(".")
    display = f"Python {minor} ({record.env})" if minor else record.kernel
    meta["kernelspec"] = {"name": record.kernel, "display_name": display, "language": "python"}
    meta["workbench_run"] = {"id": record.id, "env": record.env}


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    if not seconds:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise RunTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _jupyter_path(project: Project) -> Iterator[None]:
    import os

    saved = os.environ.get("JUPYTER_PATH")
    os.environ.update(project.jupyter_env())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved
