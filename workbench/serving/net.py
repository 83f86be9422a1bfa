"""Ports, health probes and retry delays, shared by the commands, the supervisor and the
tunnel; which host names are loopback is the runtime's (workbench.runtime.LOOPBACK_HOSTS)."""

import socket

from workbench.errors import WorkbenchError
from workbench.runtime import LOOPBACK_HOSTS
from workbench.serving.state import Health, Kind

PORT_SEARCH = 100
MAX_BACKOFF_S = 10.0


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    host = "127.0.0.1" if host == "localhost" else host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, host: str, taken: set[int] = frozenset()) -> int:
    """preferred, or the next free port after it."""
    for port in range(preferred, preferred + PORT_SEARCH):
        if port not in taken and port_is_free(port, host):
            return port
    raise WorkbenchError(f"no free port in {preferred}-{preferred + PORT_SEARCH - 1} on {host}")


def health_url(kind: str, port: int, route: str = "") -> str:
    """Where a service says it is healthy; route: the prefix of its routes (an engine on
    Ray Serve answers under /ENGINE)."""
    return f"http://127.0.0.1:{port}{route}/" + ("api" if kind == Kind.LAB else "healthz")


def probe(url: str, timeout: float = 1.0) -> Health:
    import urllib.error  # here: `ps` with nothing running never probes
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return Health.HEALTHY if reply.status == 200 else Health.UNHEALTHY
    except urllib.error.HTTPError as exc:
        return Health.STARTING if exc.code == 503 else Health.UNHEALTHY
    except (urllib.error.URLError, OSError):
        return Health.DOWN


def backoff(failures: int) -> float:
    """Seconds before the next try after `failures` quick failures in a row: 0 for the
    first, then 1, 2, 4 ... up to MAX_BACKOFF_S (a crashed app, a dropped ssh)."""
    return 0.0 if failures <= 0 else min(MAX_BACKOFF_S, 0.5 * 2**failures)
