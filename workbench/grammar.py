"""The command grammar: every noun, verb and option of `workbench`, declared here so that
the parser is built without importing what runs the commands. A handler is named
"module:function" under workbench.commands and imported only when its command runs; an
implementation's constant (a default, a list of choices) is a `Later`, read when an option
is given, its help is printed or the command runs.

The rules every command follows:
  NOUN list       lists (env, kernels, runs, services, gpus, cluster), with --json;
                  other verbs change things (`kernels prune`, not a flag on the listing)
  VERB [NAME…]    a verb that builds, checks, starts or stops named things acts on every
                  one when none is named (--all says so explicitly); deleting needs names
  --json          one JSON object on stdout (declared once, in JSON_OPTION)
A form this grammar replaced still parses for one release: its declaration names the new
form (`replaced_by`), and the CLI prints a one-line note on stderr when it is used.
"""

import argparse
import importlib
import math
from collections.abc import Iterator
from pathlib import Path

from workbench import __version__

DESCRIPTION = """Research-to-serving workbench: every envs/NAME.yml becomes an isolated env,
a lock and a Jupyter kernel (wb-NAME).

Common flows:
  workbench init                      take in an existing repository (its environment.yml)
  workbench env plan textgen          what would be installed, without building
  workbench env create                build every env and register its kernel
  workbench env lock                  write exact, hashed locks to commit
  workbench env check                 exit 1 if an env drifted from its lock
  workbench kernels list              the project's kernels and the JUPYTER_PATH to see them
  workbench run NB -p steps 2000      run a notebook in its env kernel, record it in runs/
  workbench runs compare A B          compare recorded runs (parameters, metrics)
  workbench sweep NB -p lr 1e-3,3e-4  a parameter grid, every point a recorded run
  workbench test -n 2                 smoke-run every notebook as a test
  workbench up && workbench ps        start engines and Gradio apps in the background, check them
  workbench tunnel --print            the ssh -L line that reaches lab and apps
  workbench gpus list                 the server's GPUs and who holds them
  workbench cluster up --nodes 2      a Ray cluster on 127.0.0.1 for sweep --cluster

Grammar: `NOUN list` lists (env, kernels, runs, services, gpus, cluster); a verb that
takes names acts on every one when none is named (or --all), except `env rm`.
--project and -v go before or after the command. --json prints one object with a
"schema" version and the command's data (or its error).
Exit codes: 0 success, 1 a check or build failed, 2 usage or bad input,
130 interrupted (Ctrl-C or SIGTERM; a half-made build is removed, a run keeps its record)."""

ENV_HELP = """Build model envs from envs/NAME.yml (conda environment.yml format), or from the
spec files workbench.toml points at (`workbench init` writes it for an existing repository).

Each env is built into its own prefix under .workbench/builds/ and becomes active
only when the build succeeded, so a failed build never breaks the env in use. After
a build the env is registered as the Jupyter kernel wb-NAME. A committed lock
(envs/NAME.lock) made from the current spec is installed exactly; otherwise the
spec is resolved afresh. create, lock and check act on every env when none is named."""

INIT_HELP = """Take in an existing repository: find its conda env files (environment.yml|yaml at
the root, in conda/, envs/, binder/, .binder/), its requirements*.txt (pip-only envs)
and its notebooks; assign each notebook to an env (from its kernelspec or its folder;
the rest to the default env, the only one or the root's environment.yml/requirements.txt,
with one `"." = ENV` line); write workbench.toml pointing at the spec files in place, and
add .workbench/ and runs/ to .gitignore. An environment.yml beside a requirements.txt is
one env, from the file that pins more; the other is kept in workbench.toml, commented
out. Nothing is copied or moved; an existing workbench.toml keeps its content (init only
adds), and running init again changes nothing. Then: `workbench env create` and
`workbench test`."""

KERNELS_HELP = """The project's kernelspecs. Stock Jupyter tools see project-scoped kernels once
JUPYTER_PATH includes .workbench/jupyter (printed by `kernels list`); kernels registered
with `env create --user` are seen everywhere.

  list    the kernels and the JUPYTER_PATH that shows them
  prune   remove kernels whose env is gone
  vscode  make VS Code (Remote-SSH too) list them: JUPYTER_PATH goes into the workspace
          env file (.env, or the one python.envFile names) and .vscode/settings.json hides
          the tool's own interpreter; keys you set are never changed. Exit 1 when a step
          is left to you."""

RUN_HELP = """Run a notebook with papermill in its env's kernel (or --env's) and record the run.

Parameters are checked against the notebook's `parameters` cell before any kernel
starts. The output notebook and record.json (parameters, env, lock hash, git commit,
times, status, metrics recorded with `from workbench import record`) land in
runs/<id>/, also when the run fails, times out or is interrupted."""

SWEEP_HELP = """Run a notebook once per combination of parameter values (-p NAME V1,V2,… for each
swept parameter; --zip pairs the i-th values instead). Every run is an ordinary recorded
run in runs/, tagged with the sweep id; a failed run does not stop the others; Ctrl-C
interrupts the runs in hand (their records and partial notebooks are kept) and starts no
more. Compare them with `workbench runs compare --sweep ID --plot FILE --metric M`.

Locally, --jobs runs go at once, each slot keeping its kernel warm across runs (a clean
state restored between runs); with --gpus-per-run K each slot leases K GPUs of this
server (default --jobs: as many slots as free GPUs allow). With --cluster ADDRESS (or
RAY_ADDRESS) each run is a Ray task on the cluster (`workbench cluster up`)."""

TEST_HELP = """Smoke-run the project's notebooks: those given, else every notebook under what
workbench.toml [notebooks] assigns (else under notebooks/). Each runs in an env's
kernel: --env's, else the env its kernelspec names, else the one [notebooks] assigns;
with the "smoke" parameters kept in its metadata (metadata.workbench.smoke, editable in
JupyterLab), -n at a time, each under a timeout. Notebooks with no env and envs not
built are refused before any kernel starts. Metrics are checked against
NOTEBOOK.baselines.toml [smoke]. --nbval also checks the stored outputs of notebooks
that keep them (sanitized by notebooks/nbval_sanitize.cfg)."""

UP_HELP = """Start engines and apps (SERVICE: an [engines.NAME] or [apps.NAME] of workbench.toml;
default: every one; an app's engine starts with it) under a supervisor that restarts them
when they crash; returns once each is healthy. Engines check API keys when
WORKBENCH_API_KEYS or .workbench/api_keys (0600) has some; binding anything but 127.0.0.1
needs them (and --auth for apps).

What `up` does with each service:
  not running                 starts it on this server, or with --cluster deploys the
                              engine as a Ray Serve application
  running where asked         nothing (it says where it runs)
  running on --cluster        with --replicas N other than its own: rescales it
(`workbench cluster up` starts the Ray cluster itself; `workbench serve` runs one
service in the foreground.)"""

GPUS_HELP = """Every GPU nvidia-smi lists, with its memory and utilization, the leases on it
(holder kind and name, user, project, pid, since when; how long a kernel has been idle)
and the processes computing there that hold no lease. Leases are machine-wide: every
project and user on this server sees the same ones (folder: $WORKBENCH_LEASE_DIR, default
/var/tmp/workbench-gpu-leases). A lease whose holder died is free again."""

IMAGE_HELP = """Build an OCI image of APP from its env's committed lock: the env (uv: `uv pip
sync` on a Python base pinned by digest; conda: the explicit lock and its pip part, by the
conda of a Miniconda image pinned by digest), then the code, then the model, in that order
of layers, so an edit of the app rebuilds in seconds. The image runs as uid 10001 under tini, checks
its health on /healthz, binds 127.0.0.1 unless WORKBENCH_HOST and a login say otherwise,
and carries OCI labels: spec and lock hashes, git commit, model card and the run that
trained the model.

The Containerfile and its context stay in .workbench/images/APP/ for review; hadolint
checks it when installed, and trivy or syft write a CycloneDX SBOM beside it. This
machine's CA bundle and pip configuration reach the build as secrets, never as layers.

  workbench image chat                     build with podman, docker or buildah
  workbench image chat --model bake        the model inside the image
  workbench image chat --run               build, start on 127.0.0.1, wait for health
  workbench image chat --no-build          only write the Containerfile and context"""

CLUSTER_HELP = """A Ray cluster for this server, for `workbench sweep NB … --cluster ADDRESS` (needs
the optional extra: pip install 'workbench[ray]').

  up      a head and --nodes - 1 more nodes on this machine, every port on 127.0.0.1;
          on a GPU server each node leases --gpus-per-node GPUs (default: the free ones,
          shared out), like any kernel (`workbench gpus list` shows them); without GPUs,
          --gpus-per-node gives nodes GPUs to schedule with that do not exist
  join    add this machine to the cluster whose head is at HOST:PORT
  list    the address, nodes, resources, processes and memory
  down    stop this project's nodes by PID (never `ray stop`, which stops every Ray here)

The dashboard listens on 127.0.0.1: `workbench tunnel --print` includes it."""

SERVICE_HELP = "an engine or app of workbench.toml ([engines.NAME] or [apps.NAME])"


class Later:
    """A constant of an implementation module, imported when it is first used rather than
    when the parser is built."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def get(self) -> object:
        return getattr(importlib.import_module(f"workbench.{self.module}"), self.name)

    def __iter__(self) -> Iterator:
        return iter(self.get())

    def __contains__(self, item: object) -> bool:
        return item in self.get()

    def __float__(self) -> float:
        return float(self.get())

    def __str__(self) -> str:
        value = self.get()
        return f"{value:g}" if isinstance(value, float) else str(value)


def resolve(args: argparse.Namespace) -> None:
    """Replace the defaults that are still `Later` by their values, before a handler runs."""
    for key, value in vars(args).items():
        if isinstance(value, Later):
            setattr(args, key, value.get())


class _ReplacedFlag(argparse.Action):
    """A flag of an old form whose job is now a verb: it sets itself and names that verb
    for the deprecation note."""

    def __init__(self, option_strings: list[str], dest: str, replaced_by: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)
        self.replaced_by = replaced_by

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)
        namespace.replaced_by = self.replaced_by


def _options(default: object) -> argparse.ArgumentParser:
    """--project and -v; given after a command they must not reset what was given before
    it, so the commands' copies default to SUPPRESS (not set at all)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--project",
        type=Path,
        metavar="PATH",
        default=default,
        help="project root (default: nearest folder with workbench.toml)",
    )
    options.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log every command run"
    )
    return options


COMMON = _options(argparse.SUPPRESS)
JSON_OPTION = argparse.ArgumentParser(add_help=False)
JSON_OPTION.add_argument(
    "--json",
    action="store_true",
    help="print one JSON object (schema, command, exit_code, and data or error) instead of text",
)


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: str,
    json: bool = True,
    parents: tuple[argparse.ArgumentParser, ...] = (),
    **kwargs,
) -> argparse.ArgumentParser:
    """A (sub)command; handler is "module:function" under workbench.commands."""
    if kwargs.get("description", "").count("\n") > 1:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    shared = [COMMON, JSON_OPTION] if json else [COMMON]
    parser = sub.add_parser(name, parents=[*shared, *parents], **kwargs)
    parser.set_defaults(handler=handler, replaced_by=None)
    return parser


def _deprecated(parser: argparse.ArgumentParser, replaced_by: str) -> None:
    parser.set_defaults(replaced_by=replaced_by)


def _selection(parser: argparse.ArgumentParser, dest: str, metavar: str, what: str) -> None:
    """NAME… or --all: none named means every one."""
    parser.add_argument(dest, nargs="*", metavar=metavar, help=f"{what} (default: every one)")
    parser.add_argument("--all", action="store_true", help="every one (the same as naming none)")
    parser.set_defaults(selection=dest)


def _wait_option(parser: argparse.ArgumentParser) -> None:
    """--wait [SECONDS], for commands that start something that may lease GPUs."""
    parser.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=math.inf,
        metavar="SECONDS",
        help="when GPUs are asked for and none is free, wait for them (default: fail at "
        "once, naming who holds them); a number limits the wait",
    )


def _backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=Later("envs.backends", "NAMES"),
        metavar="NAME",
        help="%(choices)s (default: conda-family if installed, else uv)",
    )


def _uv_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drop-conda-only",
        action="store_true",
        help="uv backend: build without conda-only packages (R, compilers, CUDA toolkits, "
        "MPI, C libraries), listing each one dropped; without it they are refused",
    )
    parser.add_argument(
        "--nearest-python",
        action="store_true",
        help="uv backend: when no local Python matches python= (e.g. 3.8.5) and none can be "
        "downloaded, use the nearest patch release of the same minor (e.g. 3.8.18)",
    )


def _env(sub: argparse._SubParsersAction) -> None:
    env = sub.add_parser(
        "env",
        help="build, lock and check model envs",
        description=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = env.add_subparsers(dest="verb", metavar="VERB", required=True)
    _command(verbs, "list", "env:cmd_list", help="every env with its build, lock and kernel")

    p = _command(
        verbs,
        "plan",
        "env:cmd_plan",
        help="what a build would install, without building",
        description="Print what `env create` would install: backend, interpreter, packages "
        "after conda->PyPI mapping, dropped packages with the reason, pip options. Exit 0 if "
        "the env can be built here, 2 with the reason if not.",
    )
    p.add_argument(
        "target",
        metavar="FILE_OR_NAME",
        help="an environment.yml (or requirements.txt) or an env name",
    )
    _backend_option(p)
    _uv_options(p)

    p = _command(
        verbs,
        "create",
        "env:cmd_create",
        help="build envs and register their kernels",
        description="Build each env (a no-op when nothing changed) and register its kernel; "
        "every env of the project when none is named.",
    )
    _selection(p, "names", "NAME", "env names (see `env list`)")
    p.add_argument(
        "--locked",
        action="store_true",
        help="install exactly envs/NAME.lock; fail if it is missing or stale",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    _backend_option(p)
    _uv_options(p)
    p.add_argument(
        "--user",
        action="store_true",
        help="register the kernel user-wide (named wb-PROJECT-NAME) instead of in the project",
    )

    p = _command(
        verbs,
        "lock",
        "env:cmd_lock",
        help="write envs/NAME.lock (exact, hashed)",
        description="Resolve each env exactly and write envs/NAME.lock beside its spec; "
        "every env of the project when none is named.",
    )
    _selection(p, "names", "NAME", "env names (see `env list`)")
    _backend_option(p)
    _uv_options(p)

    p = _command(
        verbs,
        "check",
        "env:cmd_check",
        help="compare lock and installed packages",
        description="Report packages added, removed or changed since the lock; exit 1 on "
        "drift. Every env of the project when none is named.",
    )
    _selection(p, "names", "NAME", "env names (see `env list`)")

    p = _command(
        verbs,
        "export",
        "env:cmd_export",
        help="a portable environment.yml of an env, pinned to its lock",
        description="Print (or write with -o) the env's spec with every requirement pinned "
        "to what its lock holds (the active build's, else the committed lock): channels, "
        "variables, options and local paths kept; build strings and prefix left out, so it "
        "builds on another platform. A VCS requirement is pinned to its locked commit.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it here")

    p = _command(
        verbs,
        "import",
        "env:cmd_import",
        help="create envs/NAME.yml from a conda env, a venv or an export file",
        description="Write envs/NAME.yml from an env built elsewhere: a conda env (its name "
        "or prefix; read from conda-meta, conda need not be installed), a venv, or a "
        "`conda env export` file (builds, prefix and platform-only packages dropped). Every "
        "Python package is pinned to the version found there, so `workbench env create "
        "NAME` builds the same versions.",
    )
    p.add_argument("name", metavar="NAME", help="the new env's name")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="ENV_OR_PATH",
        help="a conda env name, a conda prefix, a venv folder or an environment.yml",
    )
    p.add_argument("--force", action="store_true", help="replace an existing envs/NAME.yml")

    p = _command(verbs, "rm", "env:cmd_rm", help="delete an env's builds and kernels")
    p.add_argument("names", nargs="+", metavar="NAME", help="env names (deleting needs names)")


def _kernels(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "kernels",
        "kernels:cmd_kernels",
        help="list, prune and show to VS Code the project's Jupyter kernels",
        description=KERNELS_HELP,
    )
    _deprecated(p, "kernels list")
    for flag, verb in (("--prune", "prune"), ("--vscode", "vscode")):
        p.add_argument(
            flag, action=_ReplacedFlag, replaced_by=f"kernels {verb}", help=argparse.SUPPRESS
        )
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    _command(verbs, "list", "kernels:cmd_list", help="the kernels and the JUPYTER_PATH to see them")
    _command(verbs, "prune", "kernels:cmd_prune", help="remove kernels whose env is gone")
    _command(
        verbs,
        "vscode",
        "kernels:cmd_vscode",
        help="let VS Code's Jupyter extension list the project kernels (merges .env and "
        ".vscode/settings.json, never overwriting your keys)",
    )


def _runs(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "run",
        "run:cmd_run",
        help="run a notebook and record the run",
        description=RUN_HELP,
    )
    p.add_argument("notebook", type=Path, metavar="NB")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable)",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="start from a parameter set kept in the notebook (e.g. smoke, demo)",
    )
    p.add_argument("--env", metavar="NAME", help="run in this env's kernel instead")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the run after this")
    _wait_option(p)

    p = _command(sub, "runs", "run:cmd_runs", help="list, show and compare recorded runs")
    _deprecated(p, "runs list")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    _command(verbs, "list", "run:cmd_runs", help="every recorded run with its status and metrics")
    show = _command(verbs, "show", "run:cmd_show", help="one run's record")
    show.add_argument("run_id", metavar="ID", help="a run id or its unambiguous start")
    compare = _command(verbs, "compare", "run:cmd_compare", help="runs side by side")
    compare.add_argument("run_ids", nargs="*", metavar="ID")
    compare.add_argument(
        "--sweep",
        metavar="ID",
        help="the runs of this sweep: a table of metrics against the swept parameters "
        "(--plot draws --metric against the first of them)",
    )
    compare.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="bar chart of a metric across the runs"
    )
    compare.add_argument("--metric", help="the metric to plot (default: the first one shared)")

    p = _command(
        sub,
        "sweep",
        "sweep:cmd_sweep",
        help="run a notebook over a parameter grid",
        description=SWEEP_HELP,
    )
    p.add_argument("notebook", type=Path, metavar="NB")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUES"),
        help="a swept parameter and its comma-separated values (repeatable)",
    )
    p.add_argument("--zip", action="store_true", help="pair values instead of every combination")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="runs at once (locally)")
    p.add_argument(
        "--gpus-per-run", type=int, default=0, metavar="K", help="GPUs each run gets (default 0)"
    )
    p.add_argument("--preset", metavar="NAME", help="start every run from this parameter set")
    p.add_argument("--env", metavar="NAME", help="run in this env's kernel instead")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop a run after this")
    _wait_option(p)
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on this Ray cluster (default: $RAY_ADDRESS if set; else on this server)",
    )

    p = _command(
        sub, "test", "test:cmd_test", help="smoke-run notebooks as tests", description=TEST_HELP
    )
    p.add_argument("notebooks", nargs="*", type=Path, metavar="NB")
    p.add_argument(
        "-n",
        "--jobs",
        type=int,
        default=1,
        metavar="JOBS",
        help="notebooks run at once (default 1)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=Later("notebooks.suite", "DEFAULT_TIMEOUT"),
        metavar="SECONDS",
        help="per notebook (default %(default)s)",
    )
    p.add_argument(
        "--env",
        metavar="NAME",
        help="run every notebook in this env's kernel (default: each in its own env's)",
    )
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    p.add_argument("--nbval", action="store_true", help="also check stored outputs with nbval")


def _services(sub: argparse._SubParsersAction) -> None:
    bind = argparse.ArgumentParser(add_help=False)
    bind.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need --auth)",
    )
    bind.add_argument(
        "--auth", metavar="USER:PASS", help="require this login (or set WORKBENCH_AUTH)"
    )
    # The name in the printed ssh line: ~/.ssh/config's Host for this server.
    via = argparse.ArgumentParser(add_help=False)
    via.add_argument(
        "--host-alias",
        metavar="NAME",
        help="server name in the printed ssh line: the Host you have in ~/.ssh/config "
        "(default: [lab] ssh_host in workbench.toml, else this server's own name)",
    )
    health_timeout = Later("serving.lab", "HEALTH_TIMEOUT")

    p = _command(
        sub,
        "serve",
        "serve:cmd_serve",
        json=False,
        parents=(bind, via),
        help="run one engine or app in the foreground",
        description="Run a Gradio app or an engine in its env's interpreter until Ctrl-C "
        "(an app that fronts an engine needs that engine running: `workbench up ENGINE`).",
    )
    p.add_argument("app", metavar="SERVICE", help=SERVICE_HELP)
    p.add_argument("--port", type=int, help="default: the manifest's, or the next free one")
    _wait_option(p)

    p = _command(
        sub,
        "up",
        "serve:cmd_up",
        parents=(bind, via),
        help="start engines and apps in the background (or on a Ray cluster)",
        description=UP_HELP,
    )
    _selection(p, "apps", "SERVICE", SERVICE_HELP)
    _wait_option(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=health_timeout,
        metavar="SECONDS",
        help="wait this long for health (default %(default)s)",
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run the engines on this Ray cluster as Ray Serve applications (default: "
        "$RAY_ADDRESS if set; else on this server); apps still run here, streaming from them",
    )
    p.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help="with --cluster: replicas of each engine, Serve routes between them (default 1; "
        "again on a running one: rescale it)",
    )
    p.add_argument(
        "--gpus-per-replica",
        type=float,
        metavar="K",
        help="with --cluster: GPUs Ray gives each replica (default: the env's `gpus` in "
        "workbench.toml, else 0); Ray's assignment wins over a pin",
    )

    # `ps` stays beside `services list` for good: `tunnel USER@HOST` runs `ps --json` on
    # servers of every version.
    services = sub.add_parser("services", help="the project's running engines, apps and lab")
    verbs = services.add_subparsers(dest="verb", metavar="VERB", required=True)
    _command(verbs, "list", "services:cmd_list", help="running engines, apps and JupyterLab")
    _command(sub, "ps", "services:cmd_list", help="running engines, apps and lab (`services list`)")

    p = _command(
        sub, "down", "serve:cmd_down", help="stop engines and apps (default: all, and lab)"
    )
    _selection(p, "apps", "SERVICE", f"{SERVICE_HELP}, or lab")

    p = _command(sub, "logs", "serve:cmd_logs", json=False, help="an engine's or app's log")
    p.add_argument("app", metavar="SERVICE", help=f"{SERVICE_HELP}, or lab")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")

    p = _command(
        sub,
        "lab",
        "serve:cmd_lab",
        parents=(via,),
        help="JupyterLab with the project kernels",
        description="JupyterLab on 127.0.0.1 with a token, listing the project's kernels "
        "only (not the tool's own python3; kernels built while it runs appear at once); "
        "prints its URL and the ssh tunnel line. Lab starts without the Jupyter news "
        "prompt; its settings defaults live in .workbench/jupyter-config, nothing is "
        "written into your home. With --detach, --json prints its URL.",
    )
    p.add_argument("--port", type=int, help="default: [lab] port in the manifest, or 8888")
    p.add_argument("--detach", action="store_true", help="run in the background (see ps/down)")
    p.add_argument(
        "--all-kernels",
        action="store_true",
        help="list every Jupyter kernel Lab finds, the tool's own python3 too",
    )
    p.add_argument(
        "--cull-idle",
        metavar="DURATION",
        help="shut kernels down after this long without activity (e.g. 2h; tabs open or "
        "not, never while busy), which frees their GPUs",
    )

    p = _command(
        sub,
        "tunnel",
        "serve:cmd_tunnel",
        parents=(via,),
        help="ssh -L to JupyterLab, the engines and the apps",
        description="On the server, --print prints one `ssh -N -L …` line for "
        "JupyterLab and every running engine and app. On the laptop, `tunnel USER@HOST` "
        "asks the server for its running services, forwards each (a free local "
        "port where the same one is taken), prints the local URLs and stays up "
        "(reconnecting) until Ctrl-C; with --json it prints the forwards and exits.",
    )
    p.add_argument("destination", nargs="?", metavar="USER@HOST")
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the ssh line for this server's services",
    )
    p.add_argument(
        "--remote-workbench",
        default=".venv/bin/workbench",
        metavar="CMD",
        help="the workbench command on the server, run in --project's folder "
        "(default .venv/bin/workbench; plain `workbench` without --project)",
    )
    p.add_argument("-p", "--ssh-port", type=int, help="ssh port of the server")
    p.add_argument("-i", "--identity", type=Path, help="ssh private key")
    p.add_argument(
        "-o",
        "--ssh-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra ssh -o option (repeatable)",
    )

    p = _command(
        sub,
        "image",
        "image:cmd_image",
        help="build an OCI image of an app (and --run it)",
        description=IMAGE_HELP,
    )
    p.add_argument("app", metavar="APP")
    p.add_argument(
        "--builder",
        choices=Later("serving.builders", "NAMES"),
        metavar="NAME",
        help="%(choices)s (default: the first of them that works here)",
    )
    p.add_argument(
        "--base-image",
        metavar="REF",
        help="what the image is built on (default: a Debian slim Python image pinned by "
        "digest); for a uv env it needs the lock's Python as python3",
    )
    p.add_argument(
        "--conda-image",
        metavar="REF",
        help="conda envs: the image conda comes from, at /opt/conda (default: Miniconda "
        "pinned by digest); it is mounted for the install, not copied",
    )
    p.add_argument(
        "--model",
        choices=Later("serving.provenance", "MODEL_MODES"),
        default="mount",
        metavar="MODE",
        help="%(choices)s: bake the model folder into the image, or expect it on a volume "
        "(default mount; --run mounts it read-only)",
    )
    p.add_argument("--tag", help="image name (default localhost/PROJECT-APP:latest)")
    p.add_argument("--no-build", action="store_true", help="write the Containerfile only")
    p.add_argument("--no-sbom", action="store_true", help="skip the SBOM (trivy/syft)")
    p.add_argument("--run", action="store_true", help="start it on 127.0.0.1 and wait for health")
    p.add_argument("--port", type=int, help="with --run: host port (default the manifest's)")
    p.add_argument(
        "--timeout",
        type=float,
        default=health_timeout,
        metavar="SECONDS",
        help="with --run: wait this long for health (default %(default)s)",
    )


def _machines(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "gpus",
        "gpus:cmd_gpus",
        help="GPUs of this machine and who holds them",
        description=GPUS_HELP,
    )
    _deprecated(p, "gpus list")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    _command(verbs, "list", "gpus:cmd_gpus", help="the GPUs, their leases and other users")

    p = sub.add_parser(
        "cluster",
        parents=[COMMON],
        help="a Ray cluster for sweeps beyond one server",
        description=CLUSTER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = _command(verbs, "up", "cluster:cmd_up", help="start a cluster on this machine")
    up.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes, head included")
    up.add_argument("--gpus-per-node", type=int, metavar="K", help="GPUs each node schedules")
    up.add_argument("--cpus-per-node", type=int, metavar="C", help="default: cores / nodes")
    up.add_argument("--object-store-mb", type=int, metavar="MB", help="per node (default Ray's)")
    join = _command(verbs, "join", "cluster:cmd_join", help="add this machine to a cluster")
    join.add_argument("head", metavar="HOST:PORT", help="the head's address (`cluster list`)")
    join.add_argument("--gpus", type=int, metavar="K", help="GPUs this node schedules")
    join.add_argument("--cpus", type=int, metavar="C", help="CPUs this node schedules")
    _command(verbs, "list", "cluster:cmd_status", help="nodes, resources, memory")
    _deprecated(_command(verbs, "status", "cluster:cmd_status"), "cluster list")
    _command(verbs, "down", "cluster:cmd_down", help="stop this project's nodes")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="workbench",
        description=DESCRIPTION,
        parents=[_options(None)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = _command(
        sub,
        "init",
        "init:cmd_init",
        help="take in an existing repository (writes workbench.toml)",
        description=INIT_HELP,
    )
    p.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="the repository (default: --project, else the current folder)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    _env(sub)
    _kernels(sub)
    _runs(sub)
    _services(sub)
    _machines(sub)
    return top
