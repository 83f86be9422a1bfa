"""A notebook's parameters: what its `parameters` cell declares, the presets kept in its
metadata, and values from the command line checked and typed before any kernel starts."""

import ast
from dataclasses import dataclass
from pathlib import Path

import yaml

from workbench.errors import WorkbenchError, excerpt

PRESET_KEY = "workbench"
# Values in one list or dict parameter, counting each use of a YAML alias; and the length
# of a value read as YAML (the most one command-line argument holds, 128 KiB).
MAX_PARAMETER_VALUES = 100_000
MAX_PARAMETER_YAML = 128 * 1024


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
