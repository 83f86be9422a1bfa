"""Loading a Gradio app file: its imports ahead of time (a warm spare), the module itself,
its Blocks, and mounting them on a server that is already running."""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def preimport(app_file: Path) -> list[str]:
    """Import the modules the app file imports at top level (not the app's own modules),
    plus uvicorn and gradio; returns those that imported. Failures are left to the app's
    own import to report."""
    local = {p.stem for p in app_file.parent.iterdir()}
    wanted: list[tuple[str, list[str]]] = [("uvicorn", []), ("gradio", [])]
    for node in ast.parse(app_file.read_bytes()).body:
        # `try: import x / except ImportError` blocks count too
        for n in node.body if isinstance(node, ast.Try) else [node]:
            if isinstance(n, ast.Import):
                wanted += [(alias.name, []) for alias in n.names]
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                wanted.append((n.module, [alias.name for alias in n.names]))
    done = []
    for module_name, names in wanted:
        if module_name.split(".")[0] in local:
            continue
        try:
            module = importlib.import_module(module_name)
            for name in names:  # lazy packages (transformers) load submodules on access
                getattr(module, name, None)
        except Exception:  # noqa: BLE001, S112 - reported by the app's own import
            continue
        done.append(module_name)
    return done


def import_app(app_file: Path, name: str) -> ModuleType:
    """Execute the app file as module workbench_app_NAME."""
    spec = importlib.util.spec_from_file_location(f"workbench_app_{name}", app_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def find_blocks(module: ModuleType, app_file: Path):
    """The gr.Blocks to serve: the one named `demo`, else the only one the module holds."""
    import gradio as gr

    demo = getattr(module, "demo", None)
    if isinstance(demo, gr.Blocks):
        return demo
    found = {id(v): v for v in vars(module).values() if isinstance(v, gr.Blocks)}
    if len(found) == 1:
        return next(iter(found.values()))
    raise LookupError(
        f"{app_file} defines {len(found) or 'no'} gr.Blocks objects; name the one to serve `demo`"
    )


async def mount(
    fastapi_app, blocks, *, host: str, port: int, name: str, auth: tuple[str, str] | None
) -> contextlib.AsyncExitStack:
    """Mount blocks at / of a FastAPI app whose server already runs, and start what Gradio's
    lifespan hook would have started (that hook never fires on a running server): its
    lifespan, the queue workers, the limiter. The returned stack stops them."""
    import gradio as gr

    extra = {"auth": auth, "auth_message": f"workbench app {name}"} if auth else {}
    gr.mount_gradio_app(
        fastapi_app,
        blocks,
        path="/",
        server_name=host,
        server_port=port,
        footer_links=["api", "settings"],
        ssr_mode=False,
        **extra,
    )
    gradio_app = fastapi_app.router.routes[-1].app
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(gradio_app.router.lifespan_context(gradio_app))
    try:
        blocks.run_startup_events()
        await blocks.run_extra_startup_events()
    except BaseException:
        await stack.aclose()
        raise
    return stack
