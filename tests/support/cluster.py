"""The commands' cluster side where Ray is not installed."""

from pathlib import Path

from tests.support.processes import free_port
from workbench import project as projects
from workbench.serving import services
from workbench.serving.state import Kind, ServiceSpec

NO_RAY = """
import sys

class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("Ray is not installed (blocked by the test)")

sys.meta_path.insert(0, NoRay())
from workbench.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m == "ray" or m.startswith("ray.")]
sys.exit(code)
"""


def gone_deployment(root: Path) -> int:
    """A project whose engine gpt is recorded as deployed on a cluster that is not there;
    returns the port of Serve's (absent) proxy."""
    (root / "envs").mkdir()
    (root / "envs" / "tiny.yml").write_text("dependencies:\n  - python=3.11\n")
    (root / "workbench.toml").write_text(
        '[project]\nname = "p"\n[engines.gpt]\nenv = "tiny"\nmodel = "models/gpt"\nport = 8999\n'
    )
    port = free_port()
    services.record_deployment(
        projects.load(root),
        ServiceSpec(
            name="gpt", kind=Kind.ENGINE, argv=[], cwd=str(root), host="127.0.0.1",
            port=port, url=f"http://127.0.0.1:{port}/gpt/v1", log="", env_name="tiny",
            cluster=f"127.0.0.1:{free_port()}", replicas=2, route="/gpt",
        ),
    )  # fmt: skip
    return port
