"""How a service starts, described once for every place that starts one: the local
supervisor (services.start, services.foreground), an image's launcher (the services file
that workbench.runtime.launcher reads) and a Ray Serve replica (workbench.cluster.replica).

A Launch is the whole description: command line, the environment it adds, working folder,
port and health route. The command line and environment of an app and of an engine are
built here and nowhere else; what differs between this machine and an image (the env's
interpreter, the project's folder, where the model is, how an app reaches its engine) is a
Site: Here(project) or InImage(...), where "{host}" and "{port}" are the launcher's to fill.
Logins and API keys travel in the environment, never in argv (which `ps` shows).
"""

from dataclasses import asdict, dataclass, field

from workbench.envs import builds
from workbench.envs import spec as specs
from workbench.errors import WorkbenchError
from workbench.gpus import assign
from workbench.project import AppEntry, EngineEntry, Project
from workbench.runtime import contract
from workbench.serving import engines
from workbench.serving.state import Kind

APP_AUTH_VARIABLE = contract.APP_AUTH.name  # the app runner's login, by environment only
NO_GPUS = assign.Assignment(None, "none")


@dataclass(frozen=True)
class Launch:
    """One service as it is started: argv and the variables added to the environment it
    starts in, run in cwd, answering health at http://HOST:port{health}. public_needs: the
    variables of which one must be set before it may bind beyond loopback (its login, its
    API keys)."""

    name: str
    kind: Kind
    argv: list[str]
    env: dict[str, str]
    cwd: str
    host: str
    port: int
    health: str = "/healthz"
    public_needs: tuple[str, ...] = field(default=())

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.health}"

    def to_json(self) -> dict:
        """The entry of an image's services file, also what a Ray replica is given."""
        return {**asdict(self), "public_needs": list(self.public_needs)}


class Site:
    """Where a service runs, as its command line and environment name it."""

    root: str  # the project's folder as the service sees it; its working folder

    def bound(self, host: str, port: int) -> tuple[str, str]:
        """The bind address and port as the command line gives them."""
        return host, str(port)

    def python(self, env: str) -> list[str]:
        raise NotImplementedError

    def state_dir(self, name: str) -> str:
        raise NotImplementedError

    def app_file(self, app: AppEntry) -> str:
        raise NotImplementedError

    def app_model(self, app: AppEntry) -> str | None:
        raise NotImplementedError

    def engine_model(self, engine: EngineEntry) -> str:
        raise NotImplementedError

    def front(self, app: AppEntry) -> dict[str, str]:
        """What an app that fronts an engine is told to reach it."""
        raise NotImplementedError

    def engine_extras(self) -> tuple[list[str], dict[str, str]]:
        """An engine's arguments and variables that only this site has (its keys here)."""
        raise NotImplementedError


class Here(Site):
    """This machine: the env's prefix under .workbench, the project where it is."""

    def __init__(self, project: Project):
        self.project, self.root = project, str(project.root)

    def python(self, env: str) -> list[str]:
        return builds.python_command(self.project, env)

    def state_dir(self, name: str) -> str:
        return str(self.project.services_dir / name)

    def app_file(self, app: AppEntry) -> str:
        if not app.file.is_file():
            raise WorkbenchError(f"app '{app.name}': file {app.file} does not exist")
        return str(app.file)

    def app_model(self, app: AppEntry) -> str | None:
        if not app.model:
            return None
        local = self.project.root / app.model
        return str(local) if local.exists() else app.model

    def engine_model(self, engine: EngineEntry) -> str:
        return engines.model_argument(self.project, engine)

    def front(self, app: AppEntry) -> dict[str, str]:
        return engines.front_env(self.project, app)

    def engine_extras(self) -> tuple[list[str], dict[str, str]]:
        keys_path = engines.keys_file(self.project)
        argv = ["--api-keys-file", str(keys_path)] if keys_path is not None else []
        keys = contract.API_KEYS.raw()
        return argv, {contract.API_KEYS.name: keys} if keys else {}


@dataclass
class InImage(Site):
    """A container of `workbench image`: one env at python, the app's folder at root, the
    model at model (None: none), every engine's port as "{port:NAME}"."""

    project: Project
    python_path: str
    root: str
    state: str
    model: str | None
    lock_hash: str

    def bound(self, host: str, port: int) -> tuple[str, str]:
        return "{host}", "{port}"  # the launcher's: WORKBENCH_HOST, WORKBENCH_<NAME>_PORT

    def python(self, env: str) -> list[str]:
        return [self.python_path]

    def state_dir(self, name: str) -> str:
        return f"{self.state}/{name}"

    def app_file(self, app: AppEntry) -> str:
        return f"{self.root}/{app.file.relative_to(self.project.root).as_posix()}"

    def app_model(self, app: AppEntry) -> str | None:
        return None if app.engine else self.model  # a fronted engine holds the model

    def engine_model(self, engine: EngineEntry) -> str:
        return self.model or ""

    def front(self, app: AppEntry) -> dict[str, str]:
        # the key, when the engine checks them, is the first of WORKBENCH_API_KEYS
        if app.engine is None:
            return {}
        url = f"http://127.0.0.1:{{port:{app.engine}}}/v1"
        return {contract.ENGINE_URL.name: url, contract.ENGINE_MODEL.name: app.engine}

    def engine_extras(self) -> tuple[list[str], dict[str, str]]:
        return [], {contract.LOCK_HASH.name: self.lock_hash}


def environment(project: Project, env: str, site: Site) -> dict[str, str]:
    """What every service of env gets: its spec's variables, which env and project it
    serves, and unbuffered output (its log is read while it runs)."""
    variables = specs.load(project.env(env).spec_path).variables
    return {
        **{str(k): str(v) for k, v in variables.items()},
        contract.ENV.name: env,
        contract.PROJECT.name: site.root,
        "PYTHONUNBUFFERED": "1",
    }


def app(
    project: Project,
    entry: AppEntry,
    site: Site,
    host: str,
    port: int,
    auth: str | None = None,
    gpus: assign.Assignment = NO_GPUS,
) -> Launch:
    """The app runner serving entry's file in its env, checked before anything starts."""
    host, port_arg = site.bound(host, port)
    python = site.python(entry.env)
    argv = [*python, "-m", "workbench.runtime.app_runner", "--app", site.app_file(entry)]
    argv += ["--name", entry.name, "--host", host, "--port", port_arg, "--root", site.root]
    argv += ["--state-dir", site.state_dir(entry.name)]
    env = environment(project, entry.env, site)
    model = site.app_model(entry)
    if model:
        env[contract.MODEL.name] = model
    env.update(gpus.environ())
    if auth:
        env[APP_AUTH_VARIABLE] = auth
    env.update(site.front(entry))
    return Launch(
        entry.name, Kind.APP, argv, env, site.root, host, port, public_needs=(APP_AUTH_VARIABLE,)
    )


def engine(
    project: Project,
    entry: EngineEntry,
    site: Site,
    host: str,
    port: int,
    gpus: assign.Assignment = NO_GPUS,
) -> Launch:
    """The engine serving entry's model from its env, checked before anything starts."""
    host, port_arg = site.bound(host, port)
    model = site.engine_model(entry)
    extra_argv, extra_env = site.engine_extras()
    argv = [*site.python(entry.env), *engines.arguments(entry, model, host, port_arg)]
    argv += ["--root", site.root, *extra_argv]
    env = {**environment(project, entry.env, site), **gpus.environ(), **extra_env}
    needs = (contract.API_KEYS.name,)
    return Launch(entry.name, Kind.ENGINE, argv, env, site.root, host, port, public_needs=needs)


def here(
    project: Project,
    name: str,
    host: str,
    port: int,
    auth: str | None = None,
    gpus: assign.Assignment = NO_GPUS,
) -> Launch:
    """Service name of the manifest (an engine or an app) on this machine."""
    entry = project.service(name)
    if isinstance(entry, EngineEntry):
        return engine(project, entry, Here(project), host, port, gpus)
    return app(project, entry, Here(project), host, port, auth, gpus)
