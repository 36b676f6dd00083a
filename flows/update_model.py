"""The `update-model` flow: detect -> diff -> update (sgm) -> evaluate -> gate -> promote or keep -> report.

Every entry (cron schedule, manual `prefect deployment run`, the `dvc.data.updated` event, CI) runs this flow.
Only I/O tasks retry (DVC pull, registry transfers); training never does. The pipeline below knows no Prefect.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import Completed, Failed

from pipeline.chain import CONSOLIDATE_AFTER, CONSOLIDATE_ON_DRIFT, Chain, run_version
from pipeline.config import Params, Settings, load_params, load_settings
from pipeline.data import DataDiff, Manifest, build_manifest, diff_manifests
from pipeline.data import versions as dvc_versions
from pipeline.gate import PROMOTE, judge, preflight
from pipeline.model import update_card
from pipeline.progress import timed
from pipeline.registry import Registry, RegistryError, open_registry
from pipeline.report import markdown, metrics_table, plot_old_acc
from pipeline.runtime import hash_cache, runtime
from pipeline.train import run_session

LIMIT = "update-model"  # the global concurrency limit held around update + promote
SECOND = {"fallback": "the gate rejected the update (fallback=True)",  # why a version trains a second candidate
          "consolidation": "the promoted update fell behind the last retrain-made model (consolidate_on_drift=True)"}
# No task result is ever reused from Prefect's cache (each run trains and judges afresh); hashing the inputs would
# also try to pickle the registry's boto3 client and log an ERROR on every healthy S3 run.
FRESH = {"cache_policy": NO_CACHE}
IO_RETRIES = {**FRESH, "retries": 3, "retry_delay_seconds": [2, 10, 30]}


def ensure_concurrency_limit(name: str = LIMIT) -> None:
    """Create the global limit (1 slot) once; `concurrency(..., strict=True)` then refuses to run without it."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass


@task(**IO_RETRIES)
def detect(repo: Path, data: str) -> str:
    """Bring the data folder to the version data.dvc records (pull from the remote), check it, return its md5."""
    dvc_file = f"{data}.dvc"
    dvc_versions.read_data_version(repo / dvc_file)  # a missing or malformed data.dvc fails here, clearly
    dvc_versions.pull(repo, dvc_file)
    dvc_versions.check_matches(repo, dvc_file)
    return dvc_versions.read_data_version(repo / dvc_file)


@task(**IO_RETRIES)
def fetch(registry: Registry, ref: str) -> Path:
    return registry.fetch(ref)


@task(**FRESH)
def diff(champion_dir: Path | None, data_root: Path) -> tuple[DataDiff | None, Manifest]:
    """What changed since the champion, and the data's manifest: made once here, passed to every session."""
    manifest = build_manifest(data_root, hash_cache(load_settings()))
    if champion_dir is None:
        return None, manifest
    changes = diff_manifests(Manifest.from_json((champion_dir / "manifest.json").read_text()), manifest)
    changes.raise_if_refused()  # removed / relabelled / test-in-train ...: nothing is trained
    return changes, manifest


@task(**FRESH)
def run_update(parent: Path | None, data_root: Path, out: Path, params: Params, method: str, version: str,
               manifest: Manifest, changes: DataDiff | None) -> dict:
    return run_session(parent, data_root, out, params, method, data_version=version, manifest=manifest,
                       runtime=runtime(load_settings()), diff=changes)  # $PIPELINE_DEVICE, caches, memory budget


def run_shadow(parent: Path, data_root: Path, out: Path, params: Params, method: str, version: str,
               manifest: Manifest, changes: DataDiff, iterations: int) -> dict:
    """For the report only, never registered: another method on the same data and number of updates
    (a retrain keeps its own recipe)."""
    budget = params.update.model_copy(update={"max_iters": iterations, "min_iters": iterations})
    return run_update.with_options(name=f"shadow-{method}")(parent, data_root, out,
                                                            params.model_copy(update={"update": budget}), method,
                                                            version, manifest, changes)


@task(**FRESH)
def gate(candidate: Path, champion: Path, data_root: Path, params: Params, reference: Path | None,
         manifest: Manifest) -> dict:
    result = judge(candidate, champion, data_root, params.gate, runtime(load_settings()), reference, manifest)
    update_card(candidate, gate=result)
    return result


@task(**IO_RETRIES)
def register(registry: Registry, candidate: Path, note: str) -> str:
    version = registry.register(candidate, note=note)
    registry.set_alias("challenger", version, note)
    return version


@task(**IO_RETRIES)
def promote(registry: Registry, version: str, reason: str) -> None:
    registry.promote(version, reason)


@task(**IO_RETRIES)
def report(registry: Registry, out_dir: Path, title: str, lines: list[str], runs: dict[str, Path],
           metrics: dict[str, dict]) -> Path:
    """report.md, metrics.json and the curve PNG in the workspace and in the registry's reports/<run>/ (S3 when
    the registry is), plus the same as Prefect artifacts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {label: path for label, path in runs.items()  # updates, not retrains
              if metrics[label].get("stability_gap") is not None}
    png = out_dir / "old_acc_curve.png" if curves else None
    retrains = [m for m in metrics.values() if m.get("method") == "retrain"]
    references = {"parent": next((m.get("old_acc_before_eval") for m in metrics.values()), None),
                  "retrain, at its end": retrains[0].get("final_old_acc_eval") if retrains else None}
    if png:
        plot_old_acc(curves, png, "old-class accuracy during the update", references=references)
    table = metrics_table(metrics)
    (out_dir / "report.md").write_text(markdown(title, lines, table, png.name if png else None))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    files = [out_dir / "report.md", out_dir / "metrics.json", *([png] if png else [])]
    folder = registry.save_report(out_dir.name, files)
    lines = [*lines, f"- report files: {folder} in {registry.store.description}"]
    embedded = f"\n\n![curve](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})" if png else ""
    create_markdown_artifact(markdown(title, lines, table, None) + embedded, key="update-model-report",
                             description=title)
    create_table_artifact(table, key="update-model-metrics", description=title)
    return out_dir / "report.md"


def _resolve(repo: Path, path: Path) -> Path:
    return path if path.is_absolute() else repo / path


@flow(name="update-model", log_prints=True)
def update_model(workspace: str = ".", data: str = "data", method: str | None = None,
                 shadows: list[str] | None = None, force: bool = False, fallback: bool = True,
                 consolidate_after: float | None = CONSOLIDATE_AFTER,
                 consolidate_on_drift: bool = CONSOLIDATE_ON_DRIFT, wait_s: float = 3600):
    """Update the champion on the data version data.dvc records, gate it, promote it when it holds.

    `method`: default `update.method` of params.yaml (`auto`: the cheaper of an sgm update and a retrain).
    `fallback`: when the gate rejects an update, train a standard-retrain candidate, gate and promote it if it
    passes (both registered). `consolidate_after`: the candidate is the standard retrain, not an update, once
    the training images grew by this share since the data of the chain's last retrain (default None: never on a
    schedule; see pipeline/chain.py). `consolidate_on_drift`: a promoted update that the gate's paired test resolves
    below the chain's last retrain-made model is followed by a standard-retrain candidate, served in its place when
    the gate promotes it (default True; False serves the update, the cheaper chain).
    `shadows` (e.g. ["vanilla", "retrain"]) train beside the candidate for the report only; never registered. `force`
    retries a data version whose candidate the gate rejected before."""
    logger = get_run_logger()
    if logging.getLogger("pipeline").level == logging.NOTSET:  # progress of long steps (PREFECT_LOGGING_EXTRA_LOGGERS)
        logging.getLogger("pipeline").setLevel(logging.INFO)
    repo = Path(workspace).resolve()
    settings: Settings = load_settings()
    settings.registry_dir = _resolve(repo, settings.registry_dir)
    params = load_params(_resolve(repo, settings.params_file))
    method = method or params.update.method
    registry = open_registry(settings)
    data_root = repo / data

    stages: dict[str, float] = {}  # the version's wall per step (seconds, shadows apart): the summary, the report
    with timed(stages, "detect"):
        version = detect(repo, data)
    if (up_to_date := _up_to_date(registry, version, force)) is not None:
        return up_to_date
    registry.preflight()  # an unwritable or full registry fails now, not after training
    ensure_concurrency_limit()
    logger.info("data version %s is new; waiting for the %r concurrency slot", version, LIMIT)
    waiting = time.perf_counter()
    with concurrency(LIMIT, occupy=1, strict=True, timeout_seconds=wait_s):
        stages["wait"] = time.perf_counter() - waiting  # for another run's update: not this version's own work
        if (up_to_date := _up_to_date(registry, version, force)) is not None:  # done by a run we waited for
            return up_to_date
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        work = _resolve(repo, settings.work_dir) / f"{version.split('.')[0][:12]}-{stamp}"
        with timed(stages, "fetch"):
            champion = fetch(registry, "champion") if registry.alias("champion") else None
        with timed(stages, "diff"):
            changes, manifest = diff(champion, data_root)
        kind, summary = (changes.kind, changes.summary()) if changes else ("first version", "no champion yet")
        logger.info("data diff: %s", summary)
        if champion:  # a test split that cannot decide fails now, not after training
            logger.info("gate plan: %s", preflight(manifest, champion, params.gate))
        # the chain's fixed reference: the last champion a retrain made, when the champion is an update since
        with timed(stages, "fetch"):
            reference = fetch(registry, version_ref) if (version_ref := registry.reference()) else None
        retrained_on = None
        if champion and consolidate_after is not None:  # no reference: the champion is the chain's last retrain
            retrained_on = Manifest.from_json(((reference or champion) / "manifest.json").read_text())
        chain = Chain(champion, reference, retrained_on)
        if due := chain.consolidation(manifest, consolidate_after):
            logger.info("%s: the candidate is the standard retrain", due)
        note = f"data {version}: {kind}{f'; {due}' if due else ''}"
        # per candidate: its session, folder, attempt, line, registry version
        metrics, runs, attempts, lines, versions = {}, {}, {}, [], []

        def train(method: str, attempt: str) -> tuple[Path, dict]:
            if attempt != "update":
                logger.info("%s; training a %s candidate", SECOND[attempt], method)
            out = work / ("candidate" if attempt == "update" else method)
            with timed(stages, "train"):
                result = run_update.with_options(name="run_update" if attempt == "update" else f"{attempt}-{method}")(
                    champion, data_root, out, params, method, version, manifest, changes)
            key = result["method"] if attempt == "update" else f"{result['method']} ({attempt})"
            metrics[key], runs[key], attempts[out] = result, out, attempt
            return out, result

        def judge(candidate: Path, session: dict, reference: Path | None) -> dict | None:
            """The gate (none for the first version), then the candidate registered, whatever the decision."""
            result = None
            if champion:
                with timed(stages, "gate"):
                    result = gate(candidate, champion, data_root, params, reference, manifest)
            with timed(stages, "register"):
                second = f" ({attempts[candidate]} {session['method']})" if versions else ""
                versions.append(register(registry, candidate, note + second))
            lines.append(_candidate_line(versions[-1], session, result))
            return result

        outcome = run_version(chain, manifest, train, judge, method, fallback, consolidate_after, consolidate_on_drift)
        if outcome.consolidation and not due:  # on drift: why the retrain followed the promoted update
            logger.info("%s", outcome.consolidation)
            lines.append(f"- {outcome.consolidation}")
        served = outcome.promoted or outcome.attempts[-1]  # promoted, else the last rejected
        first, result = outcome.attempts[0].metrics, served.gate
        decision = PROMOTE if outcome.promoted else result["decision"]
        registered = versions[outcome.attempts.index(served)]
        if outcome.promoted:
            with timed(stages, "promote"):
                promote(registry, registered, note if result else "first version: no champion to compare against")
        if champion:
            iterations = first["iterations"]
            for name in shadows or []:
                runs[f"{name} (shadow)"] = work / f"shadow-{name}"
                metrics[f"{name} (shadow)"] = run_shadow(champion, data_root, runs[f"{name} (shadow)"], params,
                                                         name, version, manifest, changes, iterations)
    lines = [f"- data version `{version}` ({summary})", *lines,
             f"- champion now: {registry.resolve('champion')}; registry: {registry.store.description}",
             "- wall per step (s, shadows apart): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
             *(f"- inside {key}'s session (s): " + ", ".join(f"{k} {v:.1f}" for k, v in session["stages_s"].items())
               for key, session in metrics.items())]
    with timed(stages, "report"):
        path = report(registry, work, f"update-model: {note}", lines, runs, metrics)
    summary = {"status": decision, "version": registered, "data_version": version, "report": str(path),
               "stages_s": {k: round(v, 2) for k, v in stages.items()},
               "metrics": metrics, "gate": result}
    if decision != PROMOTE:
        return Failed(message=f"gate rejected {registered}: {'; '.join(result['reasons'])}", data=summary)
    return Completed(message=f"promoted {registered}", data=summary)


def _candidate_line(version: str, metrics: dict, result: dict | None) -> str:
    why = (metrics.get("path_choice") or {}).get("reason")
    decision = f"**{result['decision']}** ({'; '.join(result['reasons'])})" if result else f"**{PROMOTE}**"
    return f"- candidate {version} ({metrics['method']}{f'; {why}' if why else ''}): {decision}"


def _up_to_date(registry: Registry, version: str, force: bool):
    """The champion already has this data version (done), or its last candidate was rejected (not retried
    unless `force`: change the data or the gate rules first). A candidate that passed its gate but was never promoted
    (its run ended during the consolidation retrain after it) is tried again."""
    for alias in ("champion", "challenger") if not force else ("champion",):
        try:
            info = registry.info(alias)
        except RegistryError:
            continue
        if info.get("data_version") != version:
            continue
        if alias == "challenger" and (info.get("gate") or {}).get("decision") == PROMOTE:
            continue  # passed its gate, never promoted: its run ended before the promotion (a consolidation after it)
        data = {"status": "up to date" if alias == "champion" else "rejected before", "version": info["version"],
                "data_version": version}
        if alias == "champion":
            return Completed(message=f"up to date: champion {info['version']} has data version {version}", data=data)
        return Failed(message=f"data version {version} was tried already: {info['version']} was rejected "
                              f"({'; '.join((info.get('gate') or {}).get('reasons', []))}); run with force=True "
                              "to try again", data=data)
    return None


if __name__ == "__main__":
    print(update_model())
