"""`workbench image APP`: an OCI image of an app, built from its env's lock, and --run."""

import argparse

from workbench import project as projects
from workbench.console import err, escape, out, progress, warn
from workbench.results import Result
from workbench.serving import builders, containerfiles, images, tunnel


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
