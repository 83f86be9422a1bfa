"""What `workbench up` decides before it starts anything (workbench.serving.deploy.plan):
which services, in what order, where, and what becomes of one that runs already. No
process starts here; a cluster's deployment is its record on disk, as `ps` reads it."""

from pathlib import Path

import pytest

from workbench import project as projects
from workbench.errors import WorkbenchError
from workbench.serving import deploy, services
from workbench.serving.deploy import Action
from workbench.serving.state import Kind, Service, ServiceSpec

CLUSTER = "127.0.0.1:6379"


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> projects.Project:
    """Engines gpt (env with 2 GPUs) and emb; apps chat (fronts gpt) and notes (alone)."""
    monkeypatch.delenv(deploy.CLUSTER_VARIABLE, raising=False)
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs/tiny.yml").write_text("dependencies:\n  - python=3.11\n")
    (tmp_path / "apps").mkdir()
    for name in ("chat", "notes"):
        (tmp_path / f"apps/{name}.py").write_text("import gradio\n")
    (tmp_path / "workbench.toml").write_text(
        '[project]\nname = "p"\n[envs.tiny]\ngpus = 2\n'
        '[engines.gpt]\nenv = "tiny"\nmodel = "models/gpt"\nport = 8100\n'
        '[engines.emb]\nenv = "tiny"\nmodel = "models/emb"\nport = 8200\n'
        '[apps.chat]\nenv = "tiny"\nfile = "apps/chat.py"\nport = 7860\nengine = "gpt"\n'
        '[apps.notes]\nenv = "tiny"\nfile = "apps/notes.py"\nport = 7870\n'
    )
    return projects.load(tmp_path)


def running_here(name: str, kind: Kind, port: int) -> Service:
    return Service(
        name, kind, "tiny", "127.0.0.1", port, f"http://127.0.0.1:{port}/", "running",
        "healthy", 4242, 4241, 0, 1.0,
    )  # fmt: skip


def deployed(project: projects.Project, name: str, cluster: str, replicas: int) -> Service:
    """An engine's deployment as `up --cluster` records it; what `ps` then finds."""
    services.record_deployment(
        project,
        ServiceSpec(
            name=name, kind=Kind.ENGINE, argv=[], cwd=str(project.root), host="127.0.0.1",
            port=8100, url=f"http://127.0.0.1:8100/{name}/v1", log="x.log", env_name="tiny",
            cluster=cluster, replicas=replicas, gpus_per_replica=0.5, route=f"/{name}",
        ),
    )  # fmt: skip
    return services.running(project, name)


def actions(plan: deploy.Plan) -> list[list[tuple[str, Action]]]:
    return [[(step.name, step.action) for step in wave] for wave in plan.waves]


def test_engines_start_first_and_an_app_brings_the_engine_it_fronts(
    stack: projects.Project,
) -> None:
    plan = deploy.plan(stack, ["chat"], current={})
    assert plan.cluster is None
    assert actions(plan) == [[("gpt", Action.START)], [("chat", Action.START)]]
    assert plan.waves[1][0].engine == "gpt"  # not started when gpt fails
    everything = deploy.plan(stack, [], current={})
    assert actions(everything) == [
        [("emb", Action.START), ("gpt", Action.START)],
        [("chat", Action.START), ("notes", Action.START)],
    ]


def test_what_runs_already_is_kept_where_it_is(stack: projects.Project) -> None:
    current = {"gpt": running_here("gpt", Kind.ENGINE, 8101)}
    plan = deploy.plan(stack, ["chat"], current=current)
    assert actions(plan) == [[("gpt", Action.KEEP)], [("chat", Action.START)]]
    assert plan.waves[0][0].url == "http://127.0.0.1:8101/"


def test_on_a_cluster_engines_deploy_with_their_envs_gpus_and_apps_run_here(
    stack: projects.Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(deploy.CLUSTER_VARIABLE, CLUSTER)
    plan = deploy.plan(stack, ["chat"], current={})
    assert plan.cluster == CLUSTER
    assert actions(plan) == [[("gpt", Action.DEPLOY)], [("chat", Action.START)]]
    gpt = plan.waves[0][0]
    assert (gpt.replicas, gpt.gpus_per_replica) == (1, 2.0)
    plan = deploy.plan(stack, ["gpt"], cluster=CLUSTER, replicas=3, gpus_per_replica=1, current={})
    assert (plan.steps[0].replicas, plan.steps[0].gpus_per_replica) == (3, 1)


def test_another_replica_count_rescales_a_deployment_with_its_gpus(
    stack: projects.Project,
) -> None:
    current = {"gpt": deployed(stack, "gpt", CLUSTER, replicas=2)}
    plan = deploy.plan(stack, ["gpt"], cluster=CLUSTER, replicas=3, current=current)
    assert actions(plan) == [[("gpt", Action.RESCALE)]]
    assert (plan.steps[0].replicas, plan.steps[0].gpus_per_replica) == (3, 0.5)
    for same in (2, None):
        plan = deploy.plan(stack, ["gpt"], cluster=CLUSTER, replicas=same, current=current)
        assert actions(plan) == [[("gpt", Action.KEEP)]], same


def test_an_engine_running_elsewhere_is_refused_not_moved(stack: projects.Project) -> None:
    current = {
        "gpt": running_here("gpt", Kind.ENGINE, 8100),
        "emb": deployed(stack, "emb", "10.0.0.9:6379", replicas=1),
    }
    plan = deploy.plan(stack, ["gpt", "emb"], cluster=CLUSTER, current=current)
    assert actions(plan) == [[("gpt", Action.REFUSE), ("emb", Action.REFUSE)]]
    assert plan.steps[0].why == "gpt runs on this server: `workbench down gpt` first"
    assert plan.steps[1].why == "emb runs on 10.0.0.9:6379: `workbench down emb` first"
    # without a cluster, an engine deployed on one is simply running
    plan = deploy.plan(stack, ["emb"], current=current)
    assert actions(plan) == [[("emb", Action.KEEP)]]


def test_replicas_without_a_cluster_and_unknown_names_are_refused(
    stack: projects.Project,
) -> None:
    with pytest.raises(WorkbenchError, match="need --cluster \\(or RAY_ADDRESS\\)"):
        deploy.plan(stack, ["gpt"], replicas=2, current={})
    with pytest.raises(WorkbenchError):
        deploy.plan(stack, ["nope"], current={})
    # apps alone never go to a cluster, so the cluster is not asked for
    assert deploy.plan(stack, ["notes"], cluster=CLUSTER, current={}).cluster is None
