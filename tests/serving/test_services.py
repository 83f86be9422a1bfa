"""Services kept in .workbench/services/NAME; one that a workbench of before started in
.workbench/apps/NAME (its supervisor still running) is listed and stopped there, and a new
start of that name moves to the new folder."""

import subprocess
import sys
import time
from pathlib import Path

from tests.support.cli import json_data, workbench
from tests.support.processes import free_port
from workbench import project as projects
from workbench.serving import services
from workbench.serving.state import Health, Kind, ServiceSpec

HEALTHY = r"""
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_a_service_in_the_legacy_folder_is_listed_stopped_and_then_moves(tmp_path: Path) -> None:
    (tmp_path / "workbench.toml").write_text('[project]\nname = "p"\n')
    project = projects.load(tmp_path)
    legacy = project.legacy_services_dir / "probe"
    legacy.mkdir(parents=True)
    port = free_port()
    ServiceSpec(
        name="probe", kind=Kind.APP, argv=[sys.executable, "-c", HEALTHY, str(port)],
        cwd=str(tmp_path), host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}/",
        log=str(tmp_path / "probe.log"),
    ).write(legacy / "service.json")  # fmt: skip
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "workbench.serving.supervisor", str(legacy)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (found := services.running(project, "probe")) is None or found.health != "healthy":
            assert time.monotonic() < deadline, "the legacy service never got healthy"
            time.sleep(0.2)
        assert project.service_dir("probe") == legacy
        listed = json_data(workbench("ps", "--json", cwd=tmp_path).stdout)
        assert [(s["name"], s["health"]) for s in listed] == [("probe", Health.HEALTHY)]
        down = workbench("down", "--json", cwd=tmp_path)
        assert json_data(down.stdout) == {"probe": True}, down.stderr
        assert supervisor.wait(timeout=30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    # started again (here: deployed), it lives in the new folder and the old one is gone
    spec = ServiceSpec.read(legacy / "service.json")
    spec.cluster, spec.replicas = "127.0.0.1:6379", 1
    services.record_deployment(project, spec)
    assert not legacy.exists()
    assert project.service_dir("probe") == project.services_dir / "probe"
    assert services.deployment(project, "probe").cluster == "127.0.0.1:6379"
