"""Gradio apps as services: their login, and who may bind where (the command that serves
one is workbench.serving.launch's)."""

from workbench.errors import WorkbenchError
from workbench.runtime import contract
from workbench.serving import net

AUTH_VARIABLE = contract.AUTH.name


def auth_from(value: str | None) -> str | None:
    """USER:PASS from --auth or WORKBENCH_AUTH, validated; None when neither is set."""
    try:
        return contract.login(value) if value else contract.AUTH.get()
    except ValueError:
        raise WorkbenchError(
            f"auth must look like USER:PASS (from --auth or {AUTH_VARIABLE})"
        ) from None


def check_bind(host: str, auth: str | None) -> None:
    """Loopback is always fine; any other address exposes the server and needs auth."""
    if not net.is_loopback(host) and auth is None:
        raise WorkbenchError(
            f"--host {host} would expose the server to the network without a password; "
            f"set --auth USER:PASS or {AUTH_VARIABLE}, or reach it over `workbench tunnel`"
        )
