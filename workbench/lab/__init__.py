"""Workbench inside JupyterLab: the server extension (REST routes that answer what the CLI
answers, and a proxy to the project's engines and apps through Lab's port) and the path of
the built frontend (the "Workbench" side panel and the notebook's run buttons).

Any Lab where workbench is installed loads it (jupyter-config/ enables it through
jupyter_server_config.d); it serves the project of Lab's root folder."""

from pathlib import Path

EXTENSION = "workbench-lab"  # the frontend's package name, its folder under labextensions/


def _jupyter_labextension_paths() -> list[dict]:
    return [{"src": "labextensions/workbench-lab", "dest": EXTENSION}]


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "workbench.lab"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from workbench.lab import commands, jobs, proxy, routes

    project = commands.project_root(serverapp.root_dir)
    web_app = serverapp.web_app
    web_app.settings["workbench_project"] = project
    web_app.settings["workbench_jobs"] = jobs.Jobs(project or Path(serverapp.root_dir))
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", routes.handlers(base_url) + proxy.handlers(base_url, project))
    where = f"the project at {project}" if project else "no project (no workbench.toml)"
    serverapp.log.info(f"workbench: side panel and /workbench/proxy/ for {where}")
