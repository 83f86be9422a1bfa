"""Ray on 127.0.0.1 only, several nodes on one machine, without network namespaces.

Ray turns "127.0.0.1" into the machine's routable address (and binds everything there)
unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps every address on loopback, and
every server bound to it, in the processes that inherit it (tests/reliability/test_cluster.py
checks it). But with that variable `ray start` refuses to start a second node ("Multi-node
Ray clusters are not supported"). So a worker node of a loopback cluster is
started through this module: `python -m workbench.cluster.loopback start --address
127.0.0.1:PORT …` runs Ray's own `ray start` with that one check lifted and "localhost"
left as it is; the processes it starts inherit the variable. Drivers (workbench sweep
--cluster) set the variable before importing Ray when the address is loopback.
"""

import ipaddress
import os
import sys

VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback(address: str) -> bool:
    """Whether a Ray address (host:port, or a host) is on this machine's loopback."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def prepare_driver(address: str) -> None:
    """Before `import ray` in a driver: keep a loopback address on loopback."""
    if is_loopback(address):
        os.environ[VARIABLE] = "0"


def main() -> None:
    os.environ[VARIABLE] = "0"
    import ray
    import ray._private.ray_constants as constants
    import ray._private.services as services
    from ray.scripts.scripts import main as ray_main

    if not hasattr(services, "resolve_ip_for_localhost"):
        sys.exit(
            f"workbench: Ray {ray.__version__} resolves addresses differently: a loopback "
            "cluster needs the Ray the [ray] extra pins"
        )
    constants.ENABLE_RAY_CLUSTER = True  # lift the multi-node check in this process only
    services.resolve_ip_for_localhost = lambda host: host  # and keep 127.0.0.1 as given
    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()
