"""One `ssh -L` line for JupyterLab and every running app, and a laptop-side runner of it."""

import getpass
import ipaddress
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from workbench import results
from workbench.errors import WorkbenchError
from workbench.serving import net
from workbench.subprocesses import run, spawn

SSH_KEEPALIVE = [
    "-o",
    "ExitOnForwardFailure=yes",
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "ServerAliveCountMax=3",
]


@dataclass(frozen=True)
class Forward:
    name: str
    local: int
    remote: int

    def ssh_arg(self) -> str:
        # the laptop end binds loopback explicitly, whatever GatewayPorts says
        return f"127.0.0.1:{self.local}:127.0.0.1:{self.remote}"


# Names that mean "this machine" to whoever resolves them: useless on the laptop.
LOOPBACK_NAMES = {"localhost", "localhost6", "ip6-localhost", "ip6-loopback"}
# What the line says when the server knows no name for itself but loopback ones.
UNKNOWN_HOST = "SERVER"


def is_loopback_name(name: str) -> bool:
    name = name.lower().rstrip(".")
    if not name or name in LOOPBACK_NAMES or name.split(".")[0] in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_name() -> str:
    """The most useful name this server knows for itself: its fully qualified name, else
    its host name, never a loopback name (getfqdn() says localhost where /etc/hosts maps
    the host name to 127.0.0.1); UNKNOWN_HOST when it knows nothing better."""
    for name in (socket.getfqdn(), socket.gethostname()):
        if not is_loopback_name(name):
            return name
    return UNKNOWN_HOST


def default_destination(host_alias: str | None = None) -> str:
    """USER@HOST for the ssh line: the current user at host_alias (--host-alias or
    [lab] ssh_host: the Host users have in ~/.ssh/config), else at server_name()."""
    return f"{getpass.getuser()}@{host_alias or server_name()}"


def command(destination: str, forwards: list[Forward], ssh_options: list[str] = ()) -> list[str]:
    args = ["ssh", "-N", *ssh_options]
    for forward in forwards:
        args += ["-L", forward.ssh_arg()]
    return [*args, destination]


def line(destination: str, forwards: list[Forward]) -> str:
    return shlex.join(command(destination, forwards))


def remote_services(destination: str, ssh_options: list[str], workbench: str) -> list[dict]:
    """`workbench ps --json` run on the server over ssh (any version of workbench there)."""
    remote = f"{workbench} ps --json"
    proc = run(
        ["ssh", *ssh_options, "-o", "BatchMode=yes", destination, remote],
        what=f"`{remote}` on {destination}",
        timeout=60,
        check=False,
    )
    try:
        services = results.data_of(proc.stdout, f"`{remote}` on {destination}")
    except WorkbenchError:
        if proc.returncode == 0:
            raise
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise WorkbenchError(f"`{remote}` on {destination} failed: {last}") from None
    if not isinstance(services, list) or not all(
        isinstance(s, dict) and isinstance(s.get("port"), int) for s in services
    ):
        raise WorkbenchError(f"`{remote}` on {destination} did not list services")
    return services


def by_port(named_ports: Iterable[tuple[str, int]]) -> dict[int, str]:
    """One name a port ("a+b" where services share one: engines on Ray Serve share its
    proxy's), in the order first seen."""
    names: dict[int, list[str]] = {}
    for name, port in named_ports:
        names.setdefault(port, []).append(name)
    return {port: "+".join(found) for port, found in names.items()}


def local_forwards(services: list[dict]) -> list[Forward]:
    """One forward a port, to the same local port where free here, else the next free one."""
    taken: set[int] = set()
    forwards = []
    for remote, name in by_port((s["name"], s["port"]) for s in services).items():
        local = remote
        while local in taken or not net.port_is_free(local):
            local += 1
        taken.add(local)
        forwards.append(Forward(name, local, remote))
    return forwards


def hold(cmd: list[str], on_event: Callable[[str], None]) -> int:
    """Run ssh until Ctrl-C, reconnecting with backoff whenever it drops."""
    failures = 0
    proc: subprocess.Popen | None = None
    try:
        while True:
            began = time.monotonic()
            proc = spawn(cmd, what="ssh")
            code = proc.wait()
            failures = 0 if time.monotonic() - began > 30 else failures + 1
            delay = net.backoff(failures)
            on_event(f"ssh exited ({code}); reconnecting in {delay:.1f} s")
            time.sleep(delay)
    except KeyboardInterrupt:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()
        return 0
