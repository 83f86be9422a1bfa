"""`record(name, value)`: a metric of a notebook run, kept in its output notebook."""

import math

METRIC_MIME = "application/vnd.workbench.metric+json"


def record(name: str, value: float) -> float:
    """Record a metric of this notebook run; it lands in the run record under runs/.

    In a kernel the metric is a display output (so it is kept in the output notebook,
    even when a later cell fails); elsewhere it is printed.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"metric name must be a non-empty string, not {name!r}")
    number = float(value)
    text = f"metric {name} = {number:.6g}"
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is None:
        print(text)
        return number
    from IPython.display import display

    stored = number if math.isfinite(number) else str(number)
    display({METRIC_MIME: {"name": name, "value": stored}, "text/plain": text}, raw=True)
    return number
