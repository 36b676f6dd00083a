"""`make run`: the main job end to end on Fashion-MNIST, in a scratch workspace (the checkout stays clean).

The product's regime: a base that grows by a few percent per version. v1 (classes 0-7, 1,500 train images each)
becomes a DVC-tracked data version; the `update-model` flow trains the base model from the pretrained default and
registers it as champion. Then data arrives three times (v2: 3% more images of every class; v3: class 8 with 200
images; v4: 5% more of every class); after each `dvc add && dvc push` the flow detects the new version, chooses
the cheaper path (the update: the new data is a few percent of all data), updates the champion with SGM, gates and
promotes, with a vanilla-rehearsal and a standard-retrain shadow beside it for the report. The summary sets each
update's train FLOPs and wall time beside the retrain shadow's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

BASE = list(range(8))  # Fashion-MNIST classes 0-7 in v1; class 8 (bag) arrives in v3
# version, what arrives, and its train images per class as factors of --train-per-class (class 8: of --new-class)
ARRIVALS = [("v1", "classes 0-7", 1.0, 0.0),
            ("v2", "+3% images of every class", 1.03, 0.0),
            ("v3", "+ class 8 (bag)", 1.03, 1.0),
            ("v4", "+5% images of every class", 1.03 * 1.05, 1.05)]
SHADOWS = ["vanilla", "retrain"]
MEASURED = Path("benchmarks/results").glob("make_run*.json")  # this job's recorded runs (--results)


def measured_times() -> str:
    """What this job took on the machines it was measured on, to set beside this one: the CPU's vector kernels
    alone changed its wall time about threefold between two 2-core machines."""
    runs = [json.loads(path.read_text())["provenance"] for path in sorted(MEASURED)]
    return "; ".join(f"{run['wall_s'] / 60:.0f} min on {run['machine']}" for run in runs if "machine" in run)


def hermetic_env(root: Path) -> None:
    """Prefect's temporary local server with its database in the workspace; no analytics (they add SQLite lock
    noise), a patient server start."""
    defaults = {"PREFECT_HOME": root / "prefect", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90", "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
                "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": root / "dvc-site",
                "PIPELINE_REGISTRY_DIR": root / "models"}
    for key, value in defaults.items():
        os.environ.setdefault(key, str(value))


def start_s3(root: Path) -> str:
    """Optional demo mode: registry and DVC remote in a real S3 endpoint on loopback (moto's server)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per S3 request: the demo prints results
    server = ThreadedMotoServer("127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "PIPELINE_S3_BUCKET": "demo-models"}.items():
        os.environ.setdefault(key, value)
    boto3.client("s3").create_bucket(Bucket=os.environ["PIPELINE_S3_BUCKET"])
    return f"s3://{os.environ['PIPELINE_S3_BUCKET']}/dvc"


def summary_rows(version: str, result: dict) -> list[str]:
    if result.get("status") == "up to date":
        return [f"{version}: up to date"]
    metrics, gate = result["metrics"], result.get("gate") or {}
    rows = []
    for label, m in metrics.items():
        gap = "-" if m.get("stability_gap") is None else f"{m['stability_gap']:.1f}"
        rows.append(f"{version:<3} {label:<17} gap {gap:>5}  old {m['final_old_acc']!s:>6}  "
                    f"new {m['final_new_acc']!s:>6}  all {m['final_all_acc']!s:>6}  "
                    f"iters {m['iterations']:>5}  TFLOPs {m['train_flops'] / 1e12:>6.2f}  wall {m['wall_s']:>6.1f} s")
    decision = gate.get("decision", result["status"])
    reasons = "; ".join(gate.get("reasons", ["first version"]))
    rows.append(f"{version:<3} gate: {decision} ({reasons}) -> {result['version']}")
    steps = {step: seconds for step, seconds in result["stages_s"].items() if step != "wait"}
    rows.append(f"{version:<3} the version's steps {sum(steps.values()):.1f} s (shadows apart): "
                + ", ".join(f"{step} {seconds:.1f}" for step, seconds in steps.items()))
    served, shadow = next(iter(metrics.values())), metrics.get("retrain (shadow)")
    if shadow and served["method"] != "retrain":
        rows.append(f"{version:<3} {served['method']} against the retrain shadow: "
                    f"{shadow['train_flops'] / served['train_flops']:.1f}x fewer train FLOPs, "
                    f"{shadow['wall_s'] / served['wall_s']:.1f}x less wall time, all-class accuracy "
                    f"{served['final_all_acc']} vs {shadow['final_all_acc']}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", default="work/demo", help="scratch folder, recreated on every run")
    parser.add_argument("--train-per-class", type=int, default=1500, help="train images per class of v1")
    parser.add_argument("--new-class", type=int, default=200, help="train images of the class arriving in v3")
    parser.add_argument("--test-per-class", type=int, default=300)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--s3", action="store_true", help="registry and DVC remote in moto's S3 server on loopback")
    parser.add_argument("--results", default=None, help="also write the summary with its provenance here (JSON)")
    args = parser.parse_args(argv)
    root = Path(args.workspace).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    hermetic_env(root)

    from benchmarks.harness import code_hash
    from flows.update_model import update_model  # after the environment: Prefect reads it on import
    from pipeline.config import load_settings
    from pipeline.data import versions
    from pipeline.data.fashion_mnist import materialize
    from pipeline.device import describe, resolve_device

    machine = describe(resolve_device(load_settings().device))
    print(f"this machine: {machine}\nmeasured before: {measured_times() or 'nothing recorded'}", flush=True)
    started = time.perf_counter()
    # the code this run uses: read before it starts (edits made while it runs do not count)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    engine = code_hash()
    repo = root / "repo"
    remote = start_s3(root) if args.s3 else str(root / "dvc-remote")
    versions.init_repo(repo, remote)
    if args.s3:
        versions.dvc(repo, "remote", "modify", "storage", "endpointurl", os.environ["AWS_ENDPOINT_URL_S3"])
    shutil.copy(args.params, repo / "params.yaml")
    source = load_settings().fashion_mnist_dir
    lines, results = [], {}
    for version, what, base, new in ARRIVALS:
        print(f"\n=== data version {version} arrives ({what}) ===", flush=True)
        materialize(source, repo / "data", BASE, round(args.train_per_class * base), args.test_per_class)
        if new:  # the first N images of a class: a larger N only adds files
            materialize(source, repo / "data", [8], round(args.new_class * new), args.test_per_class)
        versions.add_and_push(repo, "data", f"data {version}: {what}")
        state = update_model(workspace=str(repo), shadows=SHADOWS, return_state=True)
        results[version] = state.result(raise_on_failure=False)
        if not isinstance(results[version], dict):
            raise SystemExit(f"the flow failed on {version}: {results[version]}")
        lines += summary_rows(version, results[version])
        print("\n".join(lines[-len(results[version].get("metrics", {})) - 1:]), flush=True)

    import torch

    from pipeline.config import load_params

    summary = {"provenance": {"commit": git or None, "params_hash": load_params(Path(args.params)).digest(),
                              "engine": engine, "machine": machine, "args": vars(args),
                              "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                              "kernels": torch.backends.cpu.get_cpu_capability(),
                              "wall_s": round(time.perf_counter() - started, 1)},
               "lines": lines, "versions": results}
    for path in [root / "summary.json", *([Path(args.results)] if args.results else [])]:
        path.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\n=== summary ({time.perf_counter() - started:.0f} s) ===")
    print("\n".join(lines))
    print(f"\nreports (markdown + old-class accuracy PNG, sgm beside the shadows): {repo / 'work'}/*/report.md")
    where = (f"s3://{os.environ['PIPELINE_S3_BUCKET']}/registry (moto, gone when this process ends)" if args.s3 else
             f"{os.environ['PIPELINE_REGISTRY_DIR']}  (PIPELINE_REGISTRY_DIR=... pipeline status)")
    print(f"registry: {where}")
    print(f"Prefect runs and artifacts: PREFECT_HOME={os.environ['PREFECT_HOME']} prefect server start, then "
          "http://127.0.0.1:4200 (or `prefect artifact ls`)")


if __name__ == "__main__":
    main()
