"""`workbench image APP`: an OCI image of an app, built from its env's lock, and --run."""

import argparse

from workbench import project as projects
from workbench.console import err, escape, out, progress, warn
from workbench.results import Result
from workbench.serving import builders, containerfiles, images, lab, provenance, tunnel

DESCRIPTION = """Build an OCI image of APP from its env's committed lock: the env (uv: `uv pip
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


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "image",
        parents=[common],
        help="build an OCI image of an app (and --run it)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", metavar="APP")
    p.add_argument(
        "--builder",
        choices=builders.NAMES,
        help="default: the first of podman, docker, buildah that works here",
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
        choices=provenance.MODEL_MODES,
        default="mount",
        help="bake the model folder into the image, or expect it on a volume (default mount; "
        "--run mounts it read-only)",
    )
    p.add_argument("--tag", help="image name (default localhost/PROJECT-APP:latest)")
    p.add_argument("--no-build", action="store_true", help="write the Containerfile only")
    p.add_argument("--no-sbom", action="store_true", help="skip the SBOM (trivy/syft)")
    p.add_argument("--run", action="store_true", help="start it on 127.0.0.1 and wait for health")
    p.add_argument("--port", type=int, help="with --run: host port (default the manifest's)")
    p.add_argument(
        "--timeout",
        type=float,
        default=lab.HEALTH_TIMEOUT,
        metavar="SECONDS",
        help=f"with --run: wait this long for health (default {lab.HEALTH_TIMEOUT:g})",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_image)


def cmd_image(args: argparse.Namespace, project: projects.Project) -> Result:
    recipe = images.recipe(
        project,
        args.app,
        base_image=args.base_image,
        conda_image=args.conda_image,
        model_mode=args.model,
        tag=args.tag,
    )
    context = containerfiles.write(recipe)
    findings = images.lint(context.dir.containerfile)
    data: dict = {
        "app": recipe.app.name,
        "kind": recipe.kind,
        "base": recipe.base,
        "conda_image": recipe.conda_image,
        "tag": recipe.tag,
        "containerfile": str(context.dir.containerfile),
        "context": str(context.dir.context),
        "build_contexts": {name: str(path) for name, path in context.contexts.items()},
        "model": {"mode": recipe.model.mode, "run": recipe.model.run_id},
        "lint": findings,
        "warnings": recipe.warnings,
    }
    if args.no_build:
        return Result(data, lambda: _show(data))
    mounts = images.volumes(recipe) if args.run else []
    builder = builders.pick(args.builder)
    with progress(f"building {recipe.tag} with {builder.name}") as update:
        built = images.build(recipe, context, builder, update)
        data.update(
            image=built.id, builder=builder.name, seconds=built.seconds, size=built.size,
            labels=built.labels, log=str(context.dir.log),
        )  # fmt: skip
        sbom = None if args.no_sbom else images.sbom(builder, built.id, context.dir.sbom, update)
    data["sbom"] = str(sbom) if sbom else None
    if args.run:
        with progress(f"starting {recipe.tag}") as update:
            update("waiting for health")
            running = images.start(recipe, built.id, builder, mounts, args.port, args.timeout)
        forwards = [tunnel.Forward(name, port, port) for name, port in running.ports.items()]
        ssh = tunnel.line(tunnel.default_destination(recipe.project.ssh_host), forwards)
        stop = f"{builders.runner(builder).name} stop {running.container}"
        data["run"] = {
            "container": running.container,
            "id": running.id,
            "url": running.url,
            "port": running.port,
            "ports": running.ports,
            "seconds_to_healthy": running.seconds,
            "ssh": ssh,
            "stop": stop,
        }
    return Result(data, lambda: _show(data))


def _show(data: dict) -> None:
    for message in data["warnings"]:
        warn(message)
    for finding in data["lint"] or []:
        warn(f"hadolint: {finding}")
    err.print(f"Containerfile and context: {escape(data['containerfile'])} (+ context/)")
    if "image" not in data:
        return
    size = data["size"] / 1e6
    err.print(
        f"[green]✓[/] {escape(data['tag'])} ({data['image'][:12]}, {size:.0f} MB) "
        f"built by {data['builder']} in {data['seconds']:.1f} s"
    )
    if data["sbom"]:
        err.print(f"SBOM (CycloneDX): {escape(data['sbom'])}")
    running = data.get("run")
    if running:
        err.print(
            f"[green]✓[/] healthy in {running['seconds_to_healthy']:.1f} s at {running['url']}"
            f" (container {running['container']}; stop: {running['stop']})"
        )
        err.print("reach it from your laptop with:")
        out.print(running["ssh"], markup=False)
