"""Metric baselines kept beside a notebook, in NOTEBOOK.baselines.toml.

    [smoke]                      # checked when the run used the "smoke" preset
    val_loss = "<= 9.0"
    [default]                    # checked when it ran with the notebook's own defaults
    recall_at_5 = ">= 0.6"

A recorded metric outside its bound turns the run into a regression (exit 1).
"""

import math
import operator
import re
import tomllib
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.textfiles import read_text

MAX_BASELINES_BYTES = 1 << 20
BOUND = re.compile(r"^\s*(<=|>=|<|>|==)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


def path_for(notebook: Path) -> Path:
    return notebook.with_name(notebook.stem + ".baselines.toml")


def load(notebook: Path, section: str) -> dict[str, tuple[str, float]]:
    """metric -> (operator, bound) for one section; {} when there is no baselines file."""
    path = path_for(notebook)
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(read_text(path, MAX_BASELINES_BYTES, "baselines file"))
    except tomllib.TOMLDecodeError as exc:
        raise WorkbenchError(f"{path}: invalid TOML: {exc}") from None
    bounds = {}
    for metric, text in (data.get(section) or {}).items():
        match = BOUND.match(str(text))
        if not match:
            raise WorkbenchError(
                f'{path}: [{section}] {metric} = {text!r}: expected a bound like "<= 6.0"'
            )
        bounds[metric] = (match[1], float(match[2]))
    return bounds


def check(metrics: dict, bounds: dict[str, tuple[str, float]]) -> list[dict]:
    """One entry per bound: metric, value, bound, ok."""
    results = []
    for metric, (op, bound) in bounds.items():
        value = metrics.get(metric)
        number = float(value) if isinstance(value, int | float) else math.nan
        ok = not math.isnan(number) and OPS[op](number, bound)
        results.append({"metric": metric, "value": value, "bound": f"{op} {bound:g}", "ok": ok})
    return results
