"""Deployments of `update-model`: one deployment, three ways in, no overlap.

    python -m flows.deploy --workspace /path/to/dvc/repo           # serve: cron + event trigger + manual runs
    prefect deployment run 'update-model/dataset-growth' --watch   # a manual run; exit code 0/1 for CI
    python -m flows.deploy --emit --workspace /path/to/dvc/repo    # announce a new data version (dvc.data.updated)
    python -m flows.deploy --pool NAME [--image IMG] --workspace /path/to/dvc/repo  # on a work pool (docs)

With PIPELINE_NOTIFY_BLOCK (a notification block, e.g. `slack-webhook/ml-alerts`), serving or deploying also
creates two automations: a failed, crashed or gate-rejected run notifies; so do PIPELINE_NOTIFY_STALE_DAYS without
a completed run (promoted or up to date).

Needs a Prefect API with a scheduler and triggers: `prefect server start` (or Prefect Cloud) and PREFECT_API_URL.
"""

from __future__ import annotations

import argparse
import hashlib
from datetime import timedelta
from pathlib import Path

from prefect import serve
from prefect.automations import Automation
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger, EventTrigger, emit_event
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import Posture

from flows.update_model import update_model
from pipeline.config import load_settings
from pipeline.data.versions import read_data_version

DEPLOYMENT = "dataset-growth"
ROOT = Path(__file__).resolve().parents[1]
EVENT = "dvc.data.updated"


def resource_id(workspace: Path) -> str:
    """The workspace's name plus a hash of its absolute path: two checkouts never trigger each other."""
    path = Path(workspace).resolve()
    return f"dvc.data.{path.name}.{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _options(workspace: Path, cron: str, shadows: list[str] | None) -> dict:
    workspace = Path(workspace).resolve()
    return dict(
        name=DEPLOYMENT,
        cron=cron,  # scheduled dataset-growth updates
        parameters={"workspace": str(workspace), "shadows": shadows or []},
        # ENQUEUE: a run arriving while one is active waits for it, then usually ends as "up to date"
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        triggers=[DeploymentEventTrigger(expect={EVENT}, match={"prefect.resource.id": resource_id(workspace)})],
        description=__doc__,
        tags=["dvc", "model-update"],
    )


def build(workspace: Path, cron: str, shadows: list[str] | None = None):
    """The served deployment (this process runs the flow runs)."""
    return update_model.to_deployment(**_options(workspace, cron, shadows))


def deploy_to_pool(workspace: Path, cron: str, pool: str, image: str | None = None,
                   shadows: list[str] | None = None):
    """The same deployment on a work pool, whose workers run the flow runs. A `process` pool's workers run
    this checkout's code (they must see `workspace` and this folder); a `docker` or `kubernetes` pool's run
    `image`, built from the Dockerfile and pushed by you (nothing is built here)."""
    options = _options(workspace, cron, shadows)
    if image:
        return update_model.deploy(**options, work_pool_name=pool, image=image, build=False, push=False,
                                   entrypoint_type=EntrypointType.MODULE_PATH,  # the image installs `flows`
                                   print_next_steps=False)
    source = update_model.from_source(source=str(ROOT), entrypoint="flows/update_model.py:update_model")
    return source.deploy(**options, work_pool_name=pool, print_next_steps=False)


FAILED_STATES = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
RUN_SUMMARY = ("Flow run {{ flow_run.name }} of {{ deployment.name }} ended {{ flow_run.state.name }}: "
               "{{ flow_run.state.message }}")


def create_automations(deployment_id, block: str, stale_days: float) -> list[str]:
    """The deployment's notifications, replaced if they exist: a run that failed, crashed or was rejected by the
    gate (the flow then ends Failed with the gate's reasons), and `stale_days` without a completed run."""
    try:
        block_id = Block.load(block)._block_document_id
    except ValueError as err:
        raise SystemExit(f"PIPELINE_NOTIFY_BLOCK={block}: no such notification block ({err}); create one "
                         "(docs/production.md, Notifications) or unset the variable") from err
    ours = {"prefect.resource.id": f"prefect.deployment.{deployment_id}", "prefect.resource.role": "deployment"}
    automations = [
        Automation(name=f"{DEPLOYMENT}: run failed or rejected", description="update-model did not promote",
                   trigger=EventTrigger(expect=FAILED_STATES, match={"prefect.resource.id": "prefect.flow-run.*"},
                                        match_related=ours, posture=Posture.Reactive, threshold=1),
                   actions=[SendNotification(block_document_id=block_id, body=RUN_SUMMARY,
                                             subject=f"update-model/{DEPLOYMENT}: run failed or rejected")]),
        Automation(name=f"{DEPLOYMENT}: no completed run for {stale_days:g} days",
                   description="no update promoted or found up to date",
                   trigger=EventTrigger(expect={"prefect.flow-run.Completed"},
                                        match={"prefect.resource.id": "prefect.flow-run.*"}, match_related=ours,
                                        posture=Posture.Proactive, threshold=1, within=timedelta(days=stale_days)),
                   actions=[SendNotification(block_document_id=block_id, subject=f"update-model/{DEPLOYMENT}: stale",
                                             body=f"No run of update-model/{DEPLOYMENT} completed in the last "
                                                  f"{stale_days:g} days; see its failed runs.")])]
    with get_client(sync_client=True) as client:
        for automation in automations:
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            automation.create()
    return [automation.name for automation in automations]


def _notify(deployment_id) -> None:
    settings = load_settings()
    if settings.notify_block:
        names = create_automations(deployment_id, settings.notify_block, settings.notify_stale_days)
        print(f"automations (notify {settings.notify_block}): {'; '.join(names)}")


def emit(workspace: Path) -> None:
    """Say that data.dvc now records a new version (a CI job or a git hook calls this after `dvc push`)."""
    version = read_data_version(Path(workspace) / "data.dvc")
    emit_event(EVENT, resource={"prefect.resource.id": resource_id(workspace), "dvc.md5": version})
    print(f"emitted {EVENT} for {resource_id(workspace)} ({version})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=".", help="the DVC repository with data.dvc and params.yaml")
    parser.add_argument("--cron", default="0 3 * * *", help="schedule of dataset-growth updates (UTC)")
    parser.add_argument("--emit", action="store_true", help="emit dvc.data.updated instead of serving")
    parser.add_argument("--pool", default=None, help="register the deployment on this work pool instead of serving")
    parser.add_argument("--image", default=None, help="with --pool of type docker/kubernetes: the image to run")
    args = parser.parse_args(argv)
    if args.emit:
        emit(Path(args.workspace))
    elif args.pool:
        deployment_id = deploy_to_pool(Path(args.workspace), args.cron, args.pool, args.image)
        print(f"deployment {deployment_id} on {args.pool}")
        _notify(deployment_id)
    else:
        deployment = build(Path(args.workspace), args.cron)
        _notify(deployment.apply())  # the deployment exists before its automations; serve() finds it again
        serve(deployment)


if __name__ == "__main__":
    main()
