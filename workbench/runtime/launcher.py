"""A container's entry point: start its services, pass signals on, end them all when one ends.

`workbench image` bakes a services file into the image and runs this under tini (PID 1):

    python -m workbench.runtime.launcher --services /opt/workbench/services.json
    python -m workbench.runtime.launcher --services ... --check   # the HEALTHCHECK

The services file is {"version": 1, "services": [SERVICE, ...]}, one SERVICE per process
(the app, and the engine it fronts), each a workbench.serving.launch.Launch as the tool
describes every service it starts (keys the launcher does not use are ignored):

    {"name": "chat", "argv": ["/opt/venv/bin/python", "-m", "...", "--port", "{port}"],
     "env": {"WORKBENCH_MODEL": "/models/tiny-gpt"}, "cwd": "/app", "port": 7860,
     "health": "/healthz", "public_needs": ["WORKBENCH_APP_AUTH"]}

"{host}", "{port}" and "{port:NAME}" in argv and env values are filled in at start: the bind
address from WORKBENCH_HOST (default 127.0.0.1), the service's port and service NAME's port
from WORKBENCH_<NAME>_PORT (default: the file's), so an app reaches the engine it fronts
wherever its port was moved. A bind address other than loopback is refused unless one of the
service's `public_needs` variables (its login or API keys) is set.

What it keeps: every service runs in a process group of its own; SIGTERM or SIGINT to the
launcher goes on to every service, and when any service ends by itself the others get
SIGTERM; whatever is still alive WORKBENCH_STOP_GRACE_S (default 8, under the 10 s that
`podman stop` and `docker stop` wait) later is SIGKILLed with its group. The launcher
exits with the status of the service that ended first by itself (128+N for signal N), or 0
when a signal stopped them and they all stopped cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from workbench.runtime import EXIT_USAGE, LOOPBACK_HOSTS, contract

POLL_S = 0.1
CHECK_TIMEOUT_S = 4.0


class Service:
    """One process to run: its command, its extra environment, where it answers health."""

    def __init__(self, entry: dict, environ: dict[str, str], ports: dict[str, int]):
        self.name = str(entry["name"])
        self.port = ports[self.name]
        self.host = contract.HOST.get(environ)
        self.health = str(entry.get("health") or "/healthz")
        self.public_needs = [str(v) for v in entry.get("public_needs", [])]
        values = {"host": self.host, "port": str(self.port)}
        values.update({f"port:{name}": str(port) for name, port in ports.items()})
        self.argv = [fill(str(a), values) for a in entry["argv"]]
        self.env = {str(k): fill(str(v), values) for k, v in (entry.get("env") or {}).items()}
        self.cwd = str(entry["cwd"]) if entry.get("cwd") else None
        self.proc: subprocess.Popen | None = None
        self.reported = False

    @property
    def health_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "[::]") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.health}"

    def refusal(self, environ: dict[str, str]) -> str | None:
        """Why this service may not bind its host, or None."""
        if self.host in LOOPBACK_HOSTS or any(environ.get(v) for v in self.public_needs):
            return None
        needs = " or ".join(self.public_needs) or "a login"
        return (
            f"{self.name}: WORKBENCH_HOST={self.host} would expose it without a password; "
            f"set {needs}, or publish 127.0.0.1 through a tunnel"
        )


def port_variable(name: str) -> str:
    """WORKBENCH_<NAME>_PORT, the variable that moves a service's port."""
    return contract.service_port(name).name


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def load(path: str, environ: dict[str, str]) -> list[Service]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    entries = data["services"]
    ports = {
        str(e["name"]): contract.service_port(str(e["name"])).get(environ) or int(e["port"])
        for e in entries
    }
    services = [Service(entry, environ, ports) for entry in entries]
    if not services:
        raise ValueError(f"{path}: no services")
    return services


def log(level: str, msg: str, **fields: object) -> None:
    """One JSON line on stdout, as the services' own logs are written."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    line = {"ts": ts, "level": level, "app": "launcher", "logger": "workbench.launcher"}
    line.update(msg=msg, **fields)
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def status_of(returncode: int) -> int:
    """A child's status as a shell reports it: 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


class Launcher:
    def __init__(self, services: list[Service], grace_s: float):
        self.services = services
        self.grace_s = grace_s
        self.signalled: int | None = None
        self.first_exit: Service | None = None

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.signalled is None:
            self.signalled = signum

    def start(self) -> None:
        for service in self.services:
            service.proc = subprocess.Popen(
                service.argv,
                env={**os.environ, **service.env},
                cwd=service.cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log("info", "started", service=service.name, pid=service.proc.pid, port=service.port)

    def running(self) -> list[Service]:
        return [s for s in self.services if s.proc is not None and s.proc.poll() is None]

    def send(self, signum: int) -> None:
        for service in self.running():
            with contextlib.suppress(ProcessLookupError):
                service.proc.send_signal(signum)

    def kill_groups(self) -> None:
        for service in self.services:
            if service.proc is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.proc.pid, signal.SIGKILL)
            if service.proc.poll() is None:
                service.proc.wait()

    def wait(self) -> int:
        """Run until a signal arrives or a service ends by itself; then stop the rest."""
        deadline = None
        while True:
            self.report_exits()
            if deadline is None and (self.signalled or self.first_exit):
                if self.signalled:
                    log("info", "stopping", signal=signal.Signals(self.signalled).name)
                self.send(signal.SIGINT if self.signalled == signal.SIGINT else signal.SIGTERM)
                deadline = time.monotonic() + self.grace_s
            if not self.running():
                break
            if deadline is not None and time.monotonic() > deadline:
                log("error", "killing what outlived the grace period", grace_s=self.grace_s)
                break
            time.sleep(POLL_S)
        self.kill_groups()
        self.report_exits()
        if self.first_exit is not None:
            return status_of(self.first_exit.proc.returncode)
        clean = (0, 128 + signal.SIGTERM, 128 + signal.SIGINT)
        failed = [s for s in self.services if status_of(s.proc.returncode) not in clean]
        return status_of(failed[0].proc.returncode) if failed else 0

    def report_exits(self) -> None:
        """Log each service that ended, once; the first to end by itself is remembered."""
        for service in self.services:
            if service.reported or service.proc.poll() is None:
                continue
            service.reported = True
            code = status_of(service.proc.returncode)
            log("info" if code == 0 else "error", "exited", service=service.name, status=code)
            if self.signalled is None and self.first_exit is None:
                self.first_exit = service


def check(services: list[Service]) -> int:
    """0 when every service answers 200 on its health URL, else 1; one line each."""
    code = 0
    for service in services:
        try:
            with urllib.request.urlopen(service.health_url, timeout=CHECK_TIMEOUT_S) as reply:
                state = reply.status
        except urllib.error.HTTPError as exc:
            state = exc.code
        except OSError as exc:
            state = str(getattr(exc, "reason", exc))
        print(f"{service.name}: {state} from {service.health_url}")
        code = code or (0 if state == 200 else 1)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", required=True, help="the services file")
    parser.add_argument("--check", action="store_true", help="exit 0 iff every one is healthy")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        services = load(args.services, environ)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"workbench launcher: cannot read {args.services}: {exc}\n")
        return EXIT_USAGE
    if args.check:
        return check(services)
    refusals = [r for r in (s.refusal(environ) for s in services) if r]
    if refusals:
        sys.stderr.write(f"workbench launcher: {refusals[0]}\n")
        return EXIT_USAGE
    try:
        grace_s = contract.STOP_GRACE_S.get(environ)
    except ValueError as exc:
        sys.stderr.write(f"workbench launcher: {exc}\n")
        return EXIT_USAGE
    launcher = Launcher(services, grace_s)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, launcher.on_signal)
    try:
        launcher.start()
    except OSError as exc:
        sys.stderr.write(f"workbench launcher: cannot start: {exc}\n")
        launcher.send(signal.SIGTERM)
        launcher.kill_groups()
        return EXIT_USAGE
    code = launcher.wait()
    log("info", "stopped", status=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
