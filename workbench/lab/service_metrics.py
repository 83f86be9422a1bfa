"""An engine's or app's request count and time to first token, read from its /metrics (the
Prometheus text the runtime writes): totals over every label, for the panel to take deltas
between two polls."""

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from workbench import results
from workbench.errors import WorkbenchError
from workbench.project import Project
from workbench.serving import services

TIMEOUT = 3.0
# Summed over labels; engines prefix theirs with workbench_engine_, apps with workbench_.
SUFFIXES = {
    "requests": "requests_total",
    "ttft_seconds_sum": "time_to_first_token_seconds_sum",
    "ttft_seconds_count": "time_to_first_token_seconds_count",
}


def totals(text: str) -> dict[str, float]:
    """Each sample's value summed over its labels: {"workbench_requests_total": 12.0}."""
    summed: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ", 1)[0] else line.partition(" ")
        value = rest.rsplit("}", 1)[-1].split()[0] if "{" in line else rest.split()[0]
        try:
            summed[name] = summed.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return summed


def figures(samples: dict[str, float]) -> dict[str, float | None]:
    return {
        key: next((v for k, v in samples.items() if k.endswith(suffix)), None)
        for key, suffix in SUFFIXES.items()
    }


async def envelope(project: Project, name: str) -> dict:
    command = "services metrics"
    try:
        service = services.running(project, name)
        if service is None or not service.port:
            raise WorkbenchError(f"service '{name}' is not running (`workbench ps` lists them)")
        url = f"http://127.0.0.1:{service.port}/metrics"
        try:
            response = await AsyncHTTPClient().fetch(url, request_timeout=TIMEOUT)
        except (HTTPClientError, OSError) as exc:
            raise WorkbenchError(f"{url}: {exc}", 1) from None
    except WorkbenchError as exc:
        return results.error_envelope(exc, command)
    samples = totals(response.body.decode("utf-8", "replace"))
    data = {"name": name, **figures(samples), "samples": samples}
    return {"schema": results.SCHEMA, "command": command, "exit_code": 0, "data": data}
