"""Deployments of `update-model`: one deployment, three ways in, no overlap.

    python -m flows.deploy --workspace /path/to/dvc/repo           # serve: cron + event trigger + manual runs
    prefect deployment run 'update-model/dataset-growth' --watch   # a manual run; exit code 0/1 for CI
    python -m flows.deploy --emit --workspace /path/to/dvc/repo    # announce a new data version (dvc.data.updated)
    python -m flows.deploy --pool NAME [--image IMG] --workspace /path/to/dvc/repo  # on a work pool (README)

Needs a Prefect API with a scheduler and triggers: `prefect server start` (or Prefect Cloud) and PREFECT_API_URL.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger, emit_event

from flows.update_model import update_model
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
        print(f"deployment {deploy_to_pool(Path(args.workspace), args.cron, args.pool, args.image)} on {args.pool}")
    else:
        serve(build(Path(args.workspace), args.cron))


if __name__ == "__main__":
    main()
