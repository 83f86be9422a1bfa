"""The processes a test starts and what they hold: free ports, listening sockets, process
trees, and children started with default signal handling so a test can interrupt them."""

import ipaddress
import os
import signal
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Listener:
    """A socket a process listens on: TCP in LISTEN state, or any bound UDP socket."""

    pid: int
    proto: str  # tcp, tcp6, udp, udp6
    address: str
    port: int


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found.setdefault(ppid, []).append(int(stat.parent.name))
    return found


def process_tree(*roots: int) -> set[int]:
    """The roots and all their living descendants (from /proc/*/stat)."""
    children = _children()
    seen: set[int] = set()
    todo = [r for r in roots if r and Path(f"/proc/{r}").exists()]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def living(pids: Iterable[int]) -> dict[int, str]:
    """The processes of pids still alive, each with its state and command line (zombies,
    state "Z", are dead: only their parent may reap them)."""
    found = {}
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if state != "Z":
            found[pid] = f"{state} {argv[:150]}"
    return found


def is_loopback_ip(address: str) -> bool:
    """127.0.0.0/8, ::1, or 127.0.0.1 mapped into IPv6 (::ffff:7f00:1)."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)  # each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def listening_sockets(pids: Iterable[int]) -> list[Listener]:
    """Every listening TCP and bound UDP socket (IPv4 and IPv6) the processes hold, read
    from /proc/PID/fd and /proc/net/{tcp,tcp6,udp,udp6}: nothing is missed for lack of
    a tool or of a process name."""
    table: dict[str, tuple[str, str, int]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / proto
        lines = path.read_text().splitlines()[1:] if path.exists() else []
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == ("0A" if proto.startswith("tcp") else "07"):  # LISTEN / unconnected
                address, port = local.split(":")
                table[inode] = (proto, _address(address), int(port, 16))
    found = set()
    for pid in set(pids):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # gone meanwhile
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in table:
                found.add(Listener(pid, *table[link[8:-1]]))
    return sorted(found, key=lambda s: (s.pid, s.proto, s.port))


def listening_ports(pid: int) -> dict[int, str]:
    """port -> local address of the TCP sockets one process listens on."""
    return {s.port: s.address for s in listening_sockets([pid]) if s.proto.startswith("tcp")}


INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def default_interrupts() -> None:
    """For preexec_fn: SIGINT and SIGTERM back to their default disposition in the child."""
    for signum in INTERRUPTS:
        signal.signal(signum, signal.SIG_DFL)


def start_interruptible(argv: list[str], **popen) -> subprocess.Popen:
    """subprocess.Popen(argv, **popen) for a child the test will interrupt (SIGINT, SIGTERM).

    A shell starts a background job (`nohup make test > log &`) with SIGINT ignored, an
    ignored signal stays ignored across exec, and Python keeps it so: a child started plainly
    would never see the Ctrl-C the test sends it. A user's foreground command gets the
    default, so the child does too."""
    return subprocess.Popen(argv, preexec_fn=default_interrupts, **popen)
