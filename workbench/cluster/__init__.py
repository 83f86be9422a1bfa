"""Beyond one server, on Ray (the optional extra `workbench[ray]`): a Ray cluster for this
server that listens on 127.0.0.1 only (nodes), sweeps whose runs are Ray tasks running
`workbench run` on their node (sweep, tasks), and engines as Ray Serve applications
(serving, replica).

Nothing on the single-server side imports this package or Ray; only `workbench cluster`,
`workbench sweep --cluster` and `workbench up/down` of an engine on a cluster do, and say
plainly when Ray is not installed.
"""

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Ray prints cluster events (a raylet that died) on the driver's stdout, which
    --json keeps for its one object: they go to stderr while Ray is connected."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
