"""Beyond one server, on Ray (the optional extra `workbench[ray]`): a Ray cluster for this
server that listens on 127.0.0.1 only (nodes), sweeps whose runs are Ray tasks running
`workbench run` on their node (sweep, tasks), and how a driver connects (driver).

Nothing on the single-server side imports this package or Ray; only `workbench cluster`
and `workbench sweep --cluster` do, and say plainly when Ray is not installed.
"""

import importlib.util

from workbench.errors import WorkbenchError

INSTALL = "pip install 'workbench[ray]' (or `make test-reliability`, which installs it)"


def require_ray() -> None:
    """A one-line error (exit 2) where Ray is not installed."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise WorkbenchError(f"a Ray cluster needs Ray, which is not installed here: {INSTALL}")
