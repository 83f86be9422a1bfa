"""What runs inside env interpreters: `record()` for notebooks, bytecode compilation, and
the app runner with its statistics.

Every env links this package (a .pth file in the env names .workbench/pylib, which holds
`workbench/__init__.py` and this folder), so its modules import only the standard library,
this package and the env's own packages (gradio, fastapi, uvicorn, torch) — never the
tool's other modules or its dependencies (yaml, rich, papermill). A ruff rule
(workbench/runtime/ruff.toml) and a test that imports every module here with `python -I`
in a bare venv hold that line. record and bytecode also run under old env Pythons (3.8+).
"""

EXIT_USAGE = 2  # bad input or usage, for the CLI and for an app that cannot start
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
