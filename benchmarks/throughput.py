"""Throughput benchmark (GPU engine): images per second of raw training steps and of the training loop, for the
standard retrain, the sgm update (with and without the feature cache), a streamed retrain and inference, at 64 and
224 px, fp32 and bf16, with peak memory. Writes benchmarks/results/throughput_<device>.{json,md} (on a CPU, <device>
names its model: two CPUs of 2 cores here differ 3x per step).

Raw step: forward, loss, backward and optimizer step on a batch already on the device (no input path).
Training loop: the session's own loop (`update`/`train`) over its data source, evaluation excluded (train_s);
its share of the raw rate says whether the input path keeps up (target on a GPU: >= 90%). 64 px uses params.yaml,
224 px the GPU profile params-gpu.yaml (twice the batch). Images are synthetic JPEGs (256 px, smooth random
patterns): throughput does not depend on what they show. Each row runs in its own process (clean peak memory) and
is kept in the results file as it finishes: a rerun resumes, redoing only rows whose code or arguments changed.

    .venv/bin/python -m benchmarks.throughput                      # this machine, default device
    .venv/bin/python -m benchmarks.throughput --quick              # minutes: 64 px only, few steps

On a GPU host without pydantic/pydantic-settings/pyyaml (the engine's settings need them), carry their wheels:
`pip download -d .device-wheels pydantic pydantic-settings pyyaml --python-version 3.X --only-binary :all:`, then
`pip install --no-index --find-links .device-wheels pydantic pydantic-settings pyyaml` there.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.harness import code_hash, git_commit
from pipeline.config import Params, load_params
from pipeline.data import build_manifest
from pipeline.device import autocast, cpu_model, describe, resolve_device, resolve_precision
from pipeline.evaluate import predict
from pipeline.methods import METHODS
from pipeline.methods.plan import Plan
from pipeline.model import build_classifier, load_model
from pipeline.model.feature_cache import FeatureCache
from pipeline.runtime import Runtime
from pipeline.train import run_session
from pipeline.train.inputs import open_inputs
from pipeline.train.session import peak_rss_mb

ROWS = ["retrain", "retrain streamed", "sgm", "sgm cached", "inference"]
OLD, NEW = 4, 2  # classes in v1; classes v2 adds
WARMUP = 3  # raw steps not timed (allocator, cuDNN autotuning)
PROFILE = {64: "params.yaml", 224: "params-gpu.yaml"}


def make_data(root: Path, per_class: int, test_per_class: int) -> tuple[Path, Path]:
    """v1: OLD classes; v2: v1 + NEW classes; synthetic 256 px JPEGs, the same for the same arguments."""
    v1, v2 = root / "v1", root / "v2"
    if v2.exists():
        return v1, v2
    generator = np.random.default_rng(0)
    for label in range(OLD + NEW):
        for split, count in (("train", per_class), ("test", test_per_class)):
            folders = [v2 / split / f"c{label}"] + ([v1 / split / f"c{label}"] if label < OLD else [])
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                small = generator.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize((256, 256), Image.Resampling.BICUBIC)
                for folder in folders:
                    image.save(folder / f"{i:05d}.jpg", quality=90)
    return v1, v2


def _params(size: int, steps: int, precision: str, *extra: str) -> Params:
    return load_params(Path(PROFILE[size]), [
        f"model.img_size={size}", f"train.precision={precision}", f"update.precision={precision}", "train.epochs=1",
        f"update.min_iters={steps}", f"update.max_iters={steps}", "eval.per_class=5",
        "eval.every=100000", "eval.dense_until=0", *extra])


def prepare(size: int, args) -> tuple[Path, Path, Path]:
    """The data (one retrain epoch = `steps` batches) and the parent of the updates (a short run: its quality
    is not the point), made once per size before any measured row."""
    work, batch = args.work / f"{size}px", _params(size, args.steps, "fp32").train.batch_size
    v1, v2 = make_data(work / "data", per_class=args.steps * batch // (OLD + NEW), test_per_class=20)
    base = work / "base"
    if not base.exists():
        run_session(None, v1, base, _params(size, args.steps, "fp32", "train.epochs=0.1"),
              runtime=Runtime(device=resolve_device(args.device)))
    return v1, v2, base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_rate(model, method: str, n_old: int, params: Params, runtime: Runtime, precision: str, pool, steps: int,
             ) -> float:
    """Images/s of bare steps of `method`'s session on one batch already on the device."""
    p = params.train if method == "retrain" else params.update
    plan = Plan(method, p, pool.class_names, n_old, [], steps, draw=None, from_parent=method != "retrain")
    trainer = METHODS[method].prepare(model, plan, pool, params)  # an update's session grows the head first
    trainer.model.train()
    index = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))[:p.batch_size]
    rows, targets = next(pool.batches(iter([index]), runtime.device))
    elapsed = 0.0
    for step in range(steps + WARMUP):
        _sync(runtime.device)
        start = time.perf_counter()
        with autocast(runtime.device, precision):
            loss = trainer.loss(trainer.model(model.normalize(rows)), targets)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        trainer.after_step()
        _sync(runtime.device)
        elapsed += time.perf_counter() - start if step >= WARMUP else 0.0
    return round(steps * p.batch_size / elapsed, 1)


def run_row(row: str, size: int, precision: str, args) -> dict:
    """One row in this process: loop rate (the session), raw rate (bare steps), peak memory."""
    device = resolve_device(args.device)
    precision = resolve_precision(precision, device)
    params = _params(size, args.steps, precision)
    v1, v2, base = prepare(size, args)
    if device.type == "cuda":
        torch.cuda.init()  # the allocator's statistics exist only once CUDA is initialised
        torch.cuda.reset_peak_memory_stats(device)
    cache = Runtime(device, FeatureCache(args.work / "features", max_mb=32768))
    runtime = {"retrain streamed": Runtime(device, memory_mb=1), "sgm cached": cache}.get(row, Runtime(device))
    out = args.work / f"{size}px" / "runs" / f"{row.replace(' ', '-')}-{precision}"
    shutil.rmtree(out, ignore_errors=True)
    result = {"row": row, "img_size": size, "precision": precision, "batch_size": params.train.batch_size,
              "params_hash": params.digest()}
    if row == "inference":
        model, card = load_model(base, device)
        manifest = build_manifest(v1)  # the parent's classes
        inputs = open_inputs(model, params, runtime, v1, manifest, card["class_names"], manifest.entries("train"))
        predict(model, inputs.pool.subset(torch.arange(min(512, len(inputs.pool)))))  # warm-up
        _sync(device)
        start = time.perf_counter()
        with autocast(device, precision):
            predict(model, inputs.pool)
        _sync(device)
        result["loop_img_s"] = round(len(inputs.pool) / (time.perf_counter() - start), 1)
    else:
        method = "retrain" if row.startswith("retrain") else "sgm"
        if row == "sgm cached":
            run_session(base, v2, out, params, "sgm", runtime=cache)  # fills the cache (cold), then the measured run
            shutil.rmtree(out)
        metrics = run_session(base, v2, out, params, method, runtime=runtime)
        result.update(loop_img_s=round(metrics["samples_seen"] / metrics["train_s"], 1), wall_s=metrics["wall_s"],
                      iterations=metrics["iterations"], streamed=metrics["streamed"],
                      feature_cache=metrics["feature_cache"])
        result["raw_img_s"] = _raw(method, row == "sgm cached", base, params, runtime, precision, v2, args.steps)
        result["loop_share_of_raw"] = round(result["loop_img_s"] / result["raw_img_s"], 3)
    result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" \
        else peak_rss_mb()
    result["peak_mem_kind"] = "GPU allocated" if device.type == "cuda" else "process RSS"
    return result


def _raw(method: str, cached: bool, base: Path, params: Params, runtime: Runtime, precision: str, data: Path,
         steps: int) -> float:
    """The raw step rate of the same session: a fresh retrain model, or the parent (its head grown by the session)."""
    parent, card = load_model(base, runtime.device)
    names = card["class_names"] + [f"c{i}" for i in range(OLD, OLD + NEW)]
    model = build_classifier(params.model, len(names)).to(runtime.device) if method == "retrain" else parent
    manifest = build_manifest(data)
    in_memory = Runtime(runtime.device, runtime.features if cached else None)  # rows on the device, cached or not
    inputs = open_inputs(model, params, in_memory, data, manifest, names, manifest.entries("train"))
    return raw_rate(model, method, len(card["class_names"]), params, runtime, precision, inputs.pool, steps)


def device_slug(device: torch.device) -> str:
    name = f"cpu {cpu_model()}" if device.type == "cpu" else torch.cuda.get_device_name(device)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def provenance(results: dict) -> dict:
    """The file's provenance in the form every results file has (rows of several invocations: their commits and
    commands joined); the params are those of each row's size (PROFILE) at that commit."""
    return {"commit": ", ".join(results["commits"]), "code_hash": results["code_hash"], "machine": results["device"],
            "torch": results["torch"], "params": {size: PROFILE[size] for size in sorted({r["img_size"]
                                                                                    for r in results["rows"]})},
            "command": "; ".join(f"python -m benchmarks.throughput {argv}" for argv in results["invocations"])}


def markdown(results: dict) -> str:
    lines = [f"# Throughput on {results['device']}", "",
             f"Commit {', '.join(results['commits'])}, code {results['code_hash']}, torch {results['torch']}, "
             f"{results['steps']} steps per row; "
             f"{'; '.join(f'`python -m benchmarks.throughput {argv}`' for argv in results['invocations'])}. "
             "Images per second; loop = the session's own loop over its data source (evaluation excluded), raw = "
             "bare steps on a batch already on the device.", "",
             "| px | precision | path | batch | raw img/s | loop img/s | loop/raw | peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['img_size']} | {r['precision']} | {r['row']} | {r['batch_size']} | "
                     f"{r.get('raw_img_s', '-')} | {r['loop_img_s']} | {r.get('loop_share_of_raw', '-')} | "
                     f"{r['peak_mem_mb']} ({r['peak_mem_kind']}) |")
    lines += ["", "## Targets (on a GPU)", "", "```", json.dumps(results["targets"], indent=2), "```", ""]
    return "\n".join(lines)


def targets(rows: list[dict]) -> dict:
    def loop(row, size, precision):
        return next((r for r in rows if (r["row"], r["img_size"], r["precision"]) == (row, size, precision)), None)

    shares = {f"{r['row']} {r['img_size']}px {r['precision']}": r["loop_share_of_raw"] for r in rows
              if "loop_share_of_raw" in r}
    speedups = {}
    for row in ROWS:
        fp32, bf16 = loop(row, 224, "fp32"), loop(row, 224, "bf16")
        if fp32 and bf16:
            speedups[row] = round(bf16["loop_img_s"] / fp32["loop_img_s"], 2)
    return {"loop_share_of_raw (>= 0.9)": shares, "bf16_over_fp32_at_224px (>= 1.8)": speedups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], choices=sorted(PROFILE))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--steps", type=int, default=40, help="training steps per row (and raw steps)")
    parser.add_argument("--quick", action="store_true", help="64 px, 10 steps")
    parser.add_argument("--work", type=Path, default=Path("work/throughput"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--one", nargs=3, metavar=("ROW", "SIZE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps = [64], 10
    if args.one:
        row, size, precision = args.one
        print(json.dumps(run_row(row, int(size), precision, args)))
        return
    device = resolve_device(args.device)
    for size in args.sizes:
        prepare(size, args)
    path = args.out / f"throughput_{device_slug(device)}{'_quick' if args.quick else ''}.json"
    # rows of earlier invocations are kept only from the same code, steps and machine (two CPUs of one name differ)
    key = {"code_hash": code_hash(), "steps": args.steps, "device": describe(device), "torch": torch.__version__}
    results = json.loads(path.read_text()) if path.exists() else {}
    done = {(r["row"], r["img_size"], r["precision"]): r for r in results.get("rows", [])} \
        if {k: results.get(k) for k in key} == key else {}
    invocation = {"commit": git_commit(), "argv": " ".join(sys.argv[1:])}
    results = {**key, "rows": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        for precision in args.precisions:
            for row in args.rows:
                if (row, size, precision) in done:
                    continue
                command = [sys.executable, "-m", "benchmarks.throughput", "--one", row, str(size), precision,
                           "--device", args.device, "--steps", str(args.steps), "--work", str(args.work)]
                child = subprocess.run(command, capture_output=True, text=True)
                if child.returncode:
                    raise SystemExit(f"{row} {size}px {precision} failed:\n{child.stderr[-3000:]}")
                done[row, size, precision] = {**json.loads(child.stdout.strip().splitlines()[-1]), **invocation}
                print(json.dumps(done[row, size, precision]), flush=True)
                # after every row, with the rows of earlier invocations (same code and steps): a run resumes
                results["rows"] = sorted(done.values(), key=lambda r: (r["img_size"], r["precision"] == "bf16",
                                                                       ROWS.index(r["row"])))
                results["commits"] = sorted({r.get("commit", "unknown") for r in results["rows"]})
                results["invocations"] = sorted({r.get("argv", "") for r in results["rows"]})
                results["provenance"] = provenance(results)
                results["targets"] = targets(results["rows"])
                path.write_text(json.dumps(results, indent=2))
                path.with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
