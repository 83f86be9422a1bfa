"""The extension's REST routes under <base_url>workbench/api/: thin handlers that build a
CLI argv, run it (in process for reads, as a job for long work) and answer the CLI's JSON
envelope. Every route needs Lab's token or cookie."""

import asyncio
import json
import re
from pathlib import Path

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from workbench import project as projects
from workbench import results
from workbench.errors import USAGE, WorkbenchError
from workbench.lab import commands, jobs, progress, service_metrics

API = "workbench/api"
# Names and ids put into an argv: never an option, never a path outside the project.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
STATUS = {0: 200, 1: 200, USAGE: 400}


class Route(APIHandler):
    """One route: answers envelopes; refuses with an error envelope naming what was wrong."""

    @property
    def root(self) -> Path:
        root = self.settings["workbench_project"]
        if root is None:
            lab_root = self.settings.get("server_root_dir", "")
            raise Refused(f"no workbench.toml at or above Lab's root folder {lab_root}", 404)
        return root

    @property
    def jobs(self) -> jobs.Jobs:
        return self.settings["workbench_jobs"]

    def project(self) -> projects.Project:
        return projects.load(self.root)

    def answer(self, envelope: dict, status: int | None = None) -> None:
        code = envelope.get("exit_code", 0)
        self.set_status(status or STATUS.get(code, 500))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(envelope, default=str))

    async def command(self, argv: list[str]) -> None:
        """Run a reading command in a thread (Lab's loop keeps serving) and answer it."""
        self.answer(await asyncio.to_thread(commands.envelope, argv, self.root))

    def body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise Refused("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused("the request body must be a JSON object")
        return body

    def name(self, value: object, what: str) -> str:
        if not isinstance(value, str) or not NAME.fullmatch(value):
            raise Refused(f"{what} {value!r}: expected letters, digits, '_', '.', ':' or '-'")
        return value

    def notebook(self, value: object) -> str:
        """A notebook as Lab names it (relative to Lab's root folder, which may lie inside
        the project), as the CLI takes it: relative to the project, inside it."""
        if not isinstance(value, str) or not value.endswith(".ipynb"):
            raise Refused(f"notebook {value!r}: expected a path to an .ipynb in the project")
        lab_root = Path(self.settings.get("server_root_dir") or self.root)
        path = (lab_root.expanduser() / value).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise Refused(f"notebook {value}: no such notebook under {self.root}", 404)
        return str(path.relative_to(self.root))

    def start(self, argv: list[str], notebook: str | None = None) -> None:
        job = self.jobs.start(argv, notebook)
        self.answer(job_envelope(self, job))

    def write_error(self, status_code: int, **kwargs) -> None:
        """Errors as envelopes too (Refused, or what tornado raised)."""
        exc = kwargs.get("exc_info", (None, None))[1]
        message = exc.message if isinstance(exc, Refused) else self._reason
        error = WorkbenchError(message, USAGE if status_code < 500 else 1)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(results.error_envelope(error, f"lab {self.request.path}")))


class Refused(tornado.web.HTTPError):
    """Bad input or something missing: the status and a one-line message for the envelope."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(status, reason=message.splitlines()[0][:200])
        self.message = message


def job_envelope(route: Route, job: jobs.Job, offset: int = 0) -> dict:
    data = job.to_json(offset)
    if job.notebook:
        data.update(progress.of_job(route.project(), job.notebook, job.started))
    return {"schema": results.SCHEMA, "command": "lab jobs", "exit_code": 0, "data": data}


class Envs(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.command(["env", "list"])


class EnvsCheck(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        names = [self.name(n, "env") for n in self.get_arguments("name")]
        await self.command(["env", "check", *names])


class EnvsBuild(Route):
    @tornado.web.authenticated
    def post(self) -> None:
        body = self.body()
        names = [self.name(n, "env") for n in body.get("names") or []]
        argv = ["env", "create", *(names or ["--all"])]
        argv += ["--locked"] * bool(body.get("locked")) + ["--force"] * bool(body.get("force"))
        self.start(argv)


class Runs(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.command(["runs", "list"])

    @tornado.web.authenticated
    def post(self) -> None:
        body = self.body()
        notebook = self.notebook(body.get("notebook"))
        argv = ["run", notebook, *self.options(body, ("preset", "env"))]
        if body.get("timeout") is not None:
            argv += ["--timeout", str(float(body["timeout"]))]
        for name, value in self.parameters(body).items():
            argv += ["-p", name, value]
        self.start(argv, notebook)

    def parameters(self, body: dict) -> dict[str, str]:
        """Parameter values as the CLI takes them (text, typed by the notebook's cell)."""
        given = body.get("parameters") or {}
        if not isinstance(given, dict):
            raise Refused("parameters: expected an object {name: value}")
        return {
            self.name(k, "parameter"): v if isinstance(v, str) else json.dumps(v)
            for k, v in given.items()
        }

    def options(self, body: dict, names: tuple[str, ...]) -> list[str]:
        argv = []
        for option in names:
            if body.get(option):
                argv += [f"--{option}", self.name(body[option], option)]
        return argv


class Sweeps(Runs):
    @tornado.web.authenticated
    def post(self) -> None:
        body = self.body()
        notebook = self.notebook(body.get("notebook"))
        argv = ["sweep", notebook, *self.options(body, ("preset", "env"))]
        argv += ["--zip"] * bool(body.get("zip"))
        if body.get("jobs"):
            argv += ["--jobs", str(int(body["jobs"]))]
        for name, values in self.parameters(body).items():
            argv += ["-p", name, values]
        self.start(argv, notebook)


class RunsCompare(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        sweep = self.get_argument("sweep", None)
        if sweep:
            await self.command(["runs", "compare", "--sweep", self.name(sweep, "sweep")])
            return
        await self.command(
            ["runs", "compare", *(self.name(i, "run") for i in self.get_arguments("id"))]
        )


class RunShow(Route):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        await self.command(["runs", "show", self.name(run_id, "run")])


class NotebookParameters(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        notebook = self.notebook(self.get_argument("path", ""))
        self.answer(await asyncio.to_thread(notebook_parameters, self.root, notebook))


def notebook_parameters(root: Path, notebook: str) -> dict:
    """The run form's fields: what `workbench run` checks -p values against, and presets."""
    from workbench.notebooks import parameters

    path = root / notebook
    command = "notebook parameters"
    try:
        declared = parameters.parameters(path)
        presets = parameters.presets(parameters.read(path))
    except WorkbenchError as exc:
        return results.error_envelope(exc, command)
    data = {
        "notebook": notebook,
        "parameters": [vars(p) for p in declared.values()],
        "presets": presets,
    }
    return {"schema": results.SCHEMA, "command": command, "exit_code": 0, "data": data}


class Services(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        envelope = await asyncio.to_thread(commands.envelope, ["services", "list"], self.root)
        for service in envelope.get("data") or []:
            if service.get("kind") != "lab":
                proxied = url_path_join(self.base_url, "workbench/proxy", service["name"])
                service["proxy"] = proxied + "/"
        self.answer(envelope)


class ServicesDeclared(Route):
    """The engines and apps workbench.toml declares: what the panel offers to start."""

    @tornado.web.authenticated
    def get(self) -> None:
        project = self.project()
        data = sorted(project.engines) + sorted(project.apps)
        envelope = {"schema": results.SCHEMA, "command": "services declared", "exit_code": 0}
        self.answer({**envelope, "data": data})


class ServiceAction(Route):
    @tornado.web.authenticated
    def post(self, name: str, action: str) -> None:
        self.start(["up" if action == "start" else "down", self.name(name, "service")])


class ServiceMetrics(Route):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        self.answer(await service_metrics.envelope(self.project(), self.name(name, "service")))


class Gpus(Route):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.command(["gpus", "list"])


class Jobs(Route):
    @tornado.web.authenticated
    def get(self) -> None:
        data = [job.to_json(offset=1 << 62) for job in self.jobs.listed()]  # no log in lists
        self.answer({"schema": results.SCHEMA, "command": "lab jobs", "exit_code": 0, "data": data})


class JobShow(Route):
    def job(self, job_id: str) -> jobs.Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise Refused(f"no job '{job_id}' started by this Lab (GET {API}/jobs lists them)", 404)
        return job

    @tornado.web.authenticated
    def get(self, job_id: str) -> None:
        offset = int(self.get_argument("offset", "0") or 0)
        self.answer(job_envelope(self, self.job(job_id), offset))


class JobStop(JobShow):
    @tornado.web.authenticated
    def post(self, job_id: str) -> None:
        job = self.job(job_id)
        self.jobs.stop(job)
        self.answer(job_envelope(self, job))


ROUTES = [
    ("envs", Envs),
    ("envs/check", EnvsCheck),
    ("envs/build", EnvsBuild),
    ("runs", Runs),
    ("runs/compare", RunsCompare),
    (r"runs/([^/]+)", RunShow),
    ("sweeps", Sweeps),
    ("notebooks/parameters", NotebookParameters),
    ("services", Services),
    ("services/declared", ServicesDeclared),
    (r"services/([^/]+)/(start|stop)", ServiceAction),
    (r"services/([^/]+)/metrics", ServiceMetrics),
    ("gpus", Gpus),
    ("jobs", Jobs),
    (r"jobs/([^/]+)", JobShow),
    (r"jobs/([^/]+)/stop", JobStop),
]


def handlers(base_url: str) -> list[tuple[str, type]]:
    return [(url_path_join(base_url, API, path) + "/?", handler) for path, handler in ROUTES]
