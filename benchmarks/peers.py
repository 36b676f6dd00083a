"""Against what a researcher would pick instead: Avalanche's strategies on the project's streams, from the same
parent, training the same layers on the same inputs with as many samples through them as the project's update at
each version, scored by the project's own evaluator on the same test split and continual-evaluation subset.

Its own environment (Avalanche is not part of `make run` or `make test`):

    python3 -m venv .venv-peers && .venv-peers/bin/pip install -c constraints.txt -e '.[peers]'
    .venv-peers/bin/python -m benchmarks.peers --seeds 3     # about 25 min on 2 CPU cores

Streams (STREAMS):
- class-incremental: Fashion-MNIST classes 0-5 at 500 train images each, then + 6-7, + 8-9, 200 test images per
  class (`make parity`'s stream); the project's chain: its standard retrain of v1, its update at v2 and v3.
- production: v1-v6 of benchmarks/production.py (8 classes at 2,800; four versions of +1-5% per class; class 8
  with 300 images); the project's chain is that benchmark's chain (its runs are read back when they match).

Every peer runs the whole stream as one Avalanche strategy over an Avalanche stream: experience 0 is v1's training
set, not trained (the project's v1 model is loaded instead; the strategy's own after-experience step fills its
buffer or keeps its teacher from it), experience k the training images new at version k+1. The project's
EfficientNet-Lite0 with the same frozen groups and frozen BatchNorm statistics; its inputs are the frozen trunk's
output for the same images (what the project's update trains on: the trunk is the same function of the image),
the new classes' output units added at random as in vanilla rehearsal, the project's optimizer (AdamW, the
update's learning rates, warm-up and cooldown) and the project's update's number of iterations at that version.
Settings (Avalanche's defaults or the methods' papers; the buffers ten times Avalanche's 200): mini-batches of
`update.batch_size` samples; replay: a buffer of MEMORY samples balanced over experiences, half of each batch (and
"replay-all": the same with every old sample kept, the pool the update draws from);
LwF: alpha 1, temperature 2; DER++: alpha 0.1, beta 0.5, a class-balanced buffer of MEMORY samples, half of each
batch; full batches only. Not held equal: the old data (the update rehearses from all of it, the peers from their
buffers, but for "replay-all"). Train FLOPs count the steps and each method's extra forward passes
(LwF's teacher; DER's logits of the previous experience's images, which the version's buffer replays: at v2, all of
v1's). Per version, a paired t-test over the seeds says whether they resolve the update's win or loss against each
peer.

Writes peers.{json,md} under --out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from benchmarks.harness import (
    benchmark_runtime,
    engine_code,
    git_commit,
    machine,
    materialize_streams,
    materialize_versions,
    reuse_or_run,
    session,
    stat,
)
from pipeline.config import Params, load_params
from pipeline.data import Manifest, build_manifest
from pipeline.evaluate import ContinualEvaluator, accuracy_report, gap_metrics, logits_of, predict
from pipeline.evaluate.metrics import top_class
from pipeline.methods import adamw, freeze_for_training
from pipeline.model import grow_head, load_card, load_model
from pipeline.runtime import Runtime
from pipeline.train.inputs import open_inputs
from pipeline.train.loop import Schedule, step_flops

MEMORY = 2000  # replay and DER buffer, samples
ALL_OLD_DATA = 10**9  # a buffer no stream fills: replay from every old sample, the pool the update rehearses from
STREAMS = ("class-incremental", "production")
PRODUCTION_VERSIONS = 6  # v1, four data-growth versions, the first new class
log = logging.getLogger("pipeline")


def project_chain(stream: str, versions: list[Path], manifests: list[Manifest], seed: int, work: Path, runtime: Runtime,
                  args) -> list[dict]:
    """The project's models along the stream: its standard retrain of v1, then its update at every later version
    from the one before. The production stream's are the production benchmark's own runs, read back (never
    redone here: that benchmark owns them); the class-incremental stream's are read back when their params,
    engine code and machine match, else made."""
    params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
    if stream == "production":
        models = work / "production" / "models" / f"seed{seed}"
        dirs = [models / "v1", *(models / f"v{n}-update" for n in range(2, len(versions) + 1))]
    else:
        models = work / "peers" / stream / f"seed{seed}"
        dirs = [models / "v1-base", *(models / f"v{n}-sgm" for n in range(2, len(versions) + 1))]
    rows, parent = [], None
    for run_dir, data, built in zip(dirs, versions, manifests, strict=True):
        method, manifest = ("sgm", built) if parent else ("retrain", None)
        if stream == "production":
            metrics = reuse_or_run(run_dir, params, _missing, run_dir)
        else:
            metrics = session(run_dir, params, parent=parent, data=data, method=method, runtime=runtime,
                              manifest=manifest)
        if metrics["method"] != method:
            raise SystemExit(f"{run_dir}: the project's chain ran {metrics['method']} there, not {method}")
        rows.append({"dir": run_dir, **metrics})
        parent = run_dir
    return rows


def _missing(run_dir: Path) -> dict:
    raise SystemExit(f"{run_dir}: no finished run of this engine, params and machine; run "
                     "`python -m benchmarks.production --seeds 3 --versions 6` first (same torch threads)")


class Features(nn.Module):
    """What Avalanche trains: the project's classifier with its frozen trunk attached (inputs are trunk features)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.classifier.normalize(x))


def _strategy(name: str, model: Features, params: Params, plugins: list):
    from avalanche.training import DER, LwF, Naive
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.utils import cycle

    batch = params.update.batch_size
    common = {"model": model, "optimizer": torch.optim.AdamW(model.parameters()), "criterion": nn.CrossEntropyLoss(),
              "train_epochs": 10**6, "evaluator": None, "device": "cpu"}
    if name == "naive":
        return Naive(**common, train_mb_size=batch, plugins=plugins)
    if name in ("replay", "replay-all"):  # the second keeps every old sample, as the update draws from
        memory = MEMORY if name == "replay" else ALL_OLD_DATA
        replay = ReplayPlugin(mem_size=memory, batch_size=batch // 2, batch_size_mem=batch - batch // 2)
        return Naive(**common, train_mb_size=batch // 2, plugins=[replay, *plugins])
    if name == "lwf":
        return LwF(**common, alpha=1.0, temperature=2.0, train_mb_size=batch, plugins=plugins)
    if name == "der++":
        class GrowingDER(DER):
            """DER++ on a head that grows: a buffered sample's stored logits are matched on the outputs it had
            when stored (padded with NaN in the batch, filled with the current outputs: no loss there)."""

            def _before_training_exp(self, **kwargs):
                super()._before_training_exp(**kwargs)
                if self.replay_loader is not None:
                    self.replay_loader = cycle(DataLoader(self.storage_policy.buffer, batch_size=self.batch_size_mem,
                                                          shuffle=True, drop_last=True, collate_fn=_pad_logits))

            def forward(self):
                out = super().forward()
                if self.is_training and self.replay_loader is not None:
                    stored = self.batch_logits
                    missing = out.shape[1] - stored.shape[1]
                    stored = torch.cat([stored, stored.new_full((len(stored), missing), float("nan"))], 1)
                    current = out[:self.batch_size_mem].detach()
                    self.batch_logits = torch.where(stored.isnan(), current, stored)
                return out

        return GrowingDER(**common, mem_size=MEMORY, batch_size_mem=batch - batch // 2, alpha=0.1, beta=0.5,
                          train_mb_size=batch // 2, plugins=plugins)
    raise ValueError(name)


PEERS = ("naive", "replay", "replay-all", "lwf", "der++")


def peer_names(text: str) -> list[str]:
    """`--peers`, comma-separated names of PEERS; an unknown name is refused before anything runs."""
    names = [name.strip() for name in text.split(",")]
    if unknown := [name for name in names if name not in PEERS]:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, unknown))} not among {', '.join(PEERS)}")
    return names


def _pad_logits(batch: list) -> tuple:
    """DER's buffer items (x, y, task, logits) with logits of the widths the head had when each was stored."""
    x, y, task = default_collate([item[:3] for item in batch])
    width = max(len(item[3]) for item in batch)
    logits = torch.full((len(batch), width), float("nan"))
    for row, item in enumerate(batch):
        logits[row, :len(item[3])] = item[3]
    return x, y, task, logits


def run_peer(name: str, seed: int, versions: list[Path], manifests: list[Manifest], chain: list[dict], params: Params,
             runtime: Runtime) -> list[dict]:
    """One strategy over the stream from the project's v1 model; per version: the project's figures, measured the
    same way, for the peer."""
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.training.plugins import SupervisedPlugin

    torch.manual_seed(seed)
    classifier, card = load_model(chain[0]["dir"], runtime.device)
    names = list(card["class_names"])
    freeze_for_training(classifier, params, freeze_all_bn=True)
    inputs, experiences = [], []
    for number, (data, manifest) in enumerate(zip(versions, manifests, strict=True)):
        names = names + sorted({c for _, c in manifest.entries("train")} - set(names))  # a new list per version
        known = set() if number == 0 else {d for _, d in manifests[number - 1].files["train"].values()}
        fresh = [(p, c) for p, c in manifest.entries("train") if manifest.files["train"][p][1] not in known]
        got = open_inputs(classifier, params, runtime, data, manifest, names, fresh)
        if got.trunk is None or (inputs and got.trunk != inputs[0].trunk):
            raise SystemExit("peers need the frozen-trunk feature cache (their inputs are the trunk's features)")
        got.release(classifier)  # the next version's trunk is split from the whole network
        inputs.append(got)
        experiences.append((got.pool.decoded().images, got.pool.targets))  # Avalanche takes tensors
    if names != load_card(chain[-1]["dir"])["class_names"]:
        raise SystemExit(f"class order {names} differs from the project's")
    inputs[0].trunk.attach(classifier)
    stream = tensors_benchmark(train_tensors=experiences, test_tensors=experiences, task_labels=[0] * len(versions))
    flops = step_flops(SimpleNamespace(model=classifier), classifier, inputs[1].pool.images[:params.update.batch_size])
    per_sample_forward = flops // (3 * params.update.batch_size)
    rows: list[dict] = []

    class Session(SupervisedPlugin):
        """The project's session around the strategy: new output units and its optimizer before an experience,
        the schedule, the budget in iterations, continual evaluation on the project's subset."""

        def before_train_dataset_adaptation(self, strategy, **kwargs):
            self.number = strategy.experience.current_experience
            self.n_old = classifier.head.out_features
            test = inputs[self.number].test
            if self.number:
                self.evaluator = ContinualEvaluator(test, self.n_old, params.eval, params.seed)
                eval_old = self.evaluator.subset.subset(self.evaluator.subset.targets < self.n_old)
                self.before = accuracy_report(predict(classifier, eval_old), eval_old.targets,
                                              test.class_names[:self.n_old], self.n_old)["old_acc"]
                grow_head(classifier, len(test.class_names) - self.n_old)

        def before_training_exp(self, strategy, **kwargs):
            self.budget = chain[self.number]["iterations"] if self.number else 0
            self.iteration, self.train_s = 0, 0.0
            if not self.budget:
                strategy.stop_training()  # experience 0: the parent is given, not trained
                return
            self.schedule = Schedule(strategy.optimizer, self.budget, params.update.warmup_share,
                                     params.update.cooldown_share)
            self.evaluator(classifier, 0, 0.0)

        def before_training_iteration(self, strategy, **kwargs):
            self.schedule.set(self.iteration)
            self.start = time.perf_counter()

        def after_training_iteration(self, strategy, **kwargs):
            self.iteration += 1
            self.train_s += time.perf_counter() - self.start
            if self.evaluator.due(self.iteration) or self.iteration == self.budget:
                self.evaluator(classifier, self.iteration, self.train_s)
            if self.iteration >= self.budget:
                strategy.stop_training()

    session = Session()
    model = Features(classifier)
    strategy = _strategy(name, model, params, [session])

    def optimizer(**_):  # the project's update optimizer, fresh at every experience (the update's is too)
        body = [p for n, p in classifier.named_parameters() if not n.startswith("head.")]
        strategy.optimizer = adamw([{"params": body, "lr": params.update.lr},
                                    {"params": list(classifier.head.parameters()), "lr": params.sgm.head_lr}],
                                   params.update.weight_decay)

    strategy.make_optimizer = optimizer
    experiences = list(stream.train_stream)
    for number, experience in enumerate(experiences):
        strategy.train(experience, drop_last=True)  # full batches only: the update's samples exactly
        if not number:
            continue
        test, n_old = inputs[number].test, session.n_old
        report = accuracy_report(top_class(logits_of(classifier, test)), test.targets, test.class_names, n_old)
        extra = {"lwf": session.iteration * params.update.batch_size,  # the teacher's forward of every sample
                 # the logits of the previous experience's images, stored with the buffer this version replays
                 "der++": len(experiences[number - 1].dataset)}.get(name, 0)
        gap = gap_metrics(session.evaluator.rows, session.before)
        rows.append({"version": number + 1, "final_all_acc": report["all_acc"], "final_old_acc": report["old_acc"],
                     "final_new_acc": report["new_acc"], "stability_gap": gap["stability_gap"],
                     "min_old_acc": gap["min_old_acc"], "iterations": session.iteration,
                     "samples_seen": session.iteration * params.update.batch_size,
                     "train_flops": flops * session.iteration + per_sample_forward * extra,
                     "train_s": round(session.train_s, 2)})
        log.info("%s seed %d v%d: all %.2f old %s new %s gap %s", name, seed, number + 1, report["all_acc"],
                 report["old_acc"], report["new_acc"], gap["stability_gap"])
    return rows


def _project_rows(chain: list[dict]) -> list[dict]:
    return [{"version": number, **{k: m.get(k) for k in ("final_all_acc", "final_old_acc", "final_new_acc",
                                                           "stability_gap", "min_old_acc", "iterations",
                                                           "samples_seen", "train_flops", "train_s")}}
            for number, m in enumerate(chain, start=1) if number > 1]


def summarize(runs: dict) -> list[dict]:
    """stream, version, method -> mean and std over seeds of every column."""
    out = []
    for stream, by_method in runs.items():
        methods = list(by_method)
        for index, first in enumerate(next(iter(by_method.values()))[0]):
            for method in methods:
                rows = [seed_rows[index] for seed_rows in by_method[method] if len(seed_rows) > index]
                if not rows:  # a method not run yet
                    continue
                out.append({"stream": stream, "version": first["version"], "method": method, "seeds": len(rows),
                            **{k: stat([r[k] for r in rows]) for k in rows[0] if k != "version"}})
    return out


def overview(runs: dict) -> list[dict]:
    """stream, method -> per seed over the stream's versions (then mean and std over seeds): mean accuracy, the
    last version's, the stability gap at the new-class and at the data-growth versions, total train FLOPs and
    seconds; and per version whether the update was at least as accurate as every peer and its gap at most a
    third of the lowest peer gap (means over seeds)."""
    out = []
    for stream, by_method in runs.items():
        new_class = {r["version"] for r in by_method["update"][0] if r["final_new_acc"] is not None}
        for method, seeds in by_method.items():
            if not seeds:
                continue

            def per_seed(pick, seeds=seeds) -> tuple:
                return stat([pick(rows) for rows in seeds])

            def gap(versions: set[int]):
                return lambda rows: _mean([r["stability_gap"] for r in rows if r["version"] in versions])

            growth = {r["version"] for r in seeds[0]} - new_class
            out.append({"stream": stream, "method": method, "seeds": len(seeds),
                        "all_mean": per_seed(lambda rows: _mean([r["final_all_acc"] for r in rows])),
                        "all_last": per_seed(lambda rows: rows[-1]["final_all_acc"]),
                        "gap_new_class": per_seed(gap(new_class)), "gap_data_growth": per_seed(gap(growth)),
                        "train_flops": per_seed(lambda rows: sum(r["train_flops"] for r in rows)),
                        "train_s": per_seed(lambda rows: sum(r["train_s"] for r in rows))})
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # two-sided 95% Student t, by degrees of freedom


def resolved(differences: list[float]) -> str:
    """`win` or `loss` when a paired t-test over the seeds (two-sided, 95%) resolves the sign of the mean
    difference, else `open`: three seeds resolve only a difference about 2.5 times its spread over seeds."""
    n = len(differences)
    if n - 1 not in T_975:
        return "open"
    mean, spread = statistics.mean(differences), statistics.stdev(differences)
    if spread == 0:
        return "open" if mean == 0 else ("win" if mean > 0 else "loss")
    return ("win" if mean > 0 else "loss") if abs(mean) / (spread / math.sqrt(n)) > T_975[n - 1] else "open"


def paired(runs: dict, stream: str, version: int) -> str:
    """Per peer, the update's all-class accuracy minus the peer's, seed by seed, as `resolved` reads it."""
    def accuracy(seeds: list[list[dict]]) -> list[float]:
        return [r["final_all_acc"] for rows in seeds for r in rows if r["version"] == version]

    update = accuracy(runs[stream]["update"])
    verdicts = []
    for method, seeds in runs[stream].items():
        peer = accuracy(seeds)
        if method != "update" and len(peer) == len(update):
            verdicts.append(f"{method} {resolved([u - p for u, p in zip(update, peer, strict=True)])}")
    return ", ".join(verdicts)


def targets(summary: list[dict], runs: dict) -> list[str]:
    """A table row per (stream, version): the update's mean all-class accuracy minus the best peer's; at new-class
    versions, the update's mean stability gap against the lowest peer's, and their ratio (target: at most 1/3); and
    per peer, whether the seeds resolve the update's win or loss (`paired`)."""
    lines = ["| stream | version | update − best peer, all-class accuracy | update's stability gap / lowest peer's | "
             "update against each peer, paired over seeds (t-test, 95%) |", "|---|---|---|---|---|"]
    for stream in dict.fromkeys(r["stream"] for r in summary):
        rows = [r for r in summary if r["stream"] == stream]
        for version in sorted({r["version"] for r in rows}):
            cell = {r["method"]: r for r in rows if r["version"] == version}
            update, peers = cell["update"], [r for m, r in cell.items() if m != "update"]
            best = max(peers, key=lambda r: r["final_all_acc"][0])
            gap = "–"
            if update["final_new_acc"][0] is not None:
                lowest = min(peers, key=lambda r: r["stability_gap"][0])
                gap = (f"{update['stability_gap'][0]:.2f} / {lowest['stability_gap'][0]:.2f} ({lowest['method']}): "
                       f"{update['stability_gap'][0] / lowest['stability_gap'][0]:.2f}")
            lines.append(f"| {stream} | v{version} | {update['final_all_acc'][0] - best['final_all_acc'][0]:+.2f} "
                         f"({best['method']}) | {gap} | {paired(runs, stream, version)} |")
    return lines


def markdown(prov: dict, made: dict, summary: list[dict], overview_rows: list[dict], runs: dict) -> str:
    def cell(row: dict, key: str, unit: float = 1.0) -> str:
        mean, std = row[key]
        return "–" if mean is None else f"{mean / unit:.2f} ± {std / unit:.2f}"

    lines = ["# Peers: Avalanche's strategies against the project's update (same parent, layers, inputs, samples)",
             "", f"code {prov['code_hash']}, params {prov['params_hash']}, {prov['machine']}, torch {prov['torch']}, "
             f"avalanche-lib {prov['avalanche']}; " + "; ".join(
                 f"{stream}: commit {m['commit']}, `{m['command']}`, done {m['seconds']} s after it started"
                 for stream, m in made.items())
             + ".", "",
             "Accuracy on the version's whole test split; the stability gap on the project's continual-evaluation "
             "subset (the old classes' accuracy before the version minus its lowest point during it); mean ± std "
             f"over {prov['seeds']} seed(s). Each method runs the stream as a chain of its own from the project's v1 "
             "model; `update` is the project's (default params). Train seconds: the training steps alone.", "",
             "## Over the stream", "",
             "| stream | method | all, mean over versions | all, last version | stability gap, new-class versions | "
             "stability gap, data-growth versions | TFLOPs | train s |", "|" + "---|" * 8]
    for row in overview_rows:
        lines.append(f"| {row['stream']} | {row['method']} | {cell(row, 'all_mean')} | {cell(row, 'all_last')} | "
                     f"{cell(row, 'gap_new_class')} | {cell(row, 'gap_data_growth')} | "
                     f"{cell(row, 'train_flops', 1e12)} | {cell(row, 'train_s')} |")
    lines += ["", "## The update against the best peer", "", *targets(summary, runs), "", "## Per version", "",
              "| stream | version | method | all | old | new | stability gap | samples | TFLOPs | train s |",
              "|" + "---|" * 10]
    for row in summary:
        lines.append(f"| {row['stream']} | v{row['version']} | {row['method']} | {cell(row, 'final_all_acc')} | "
                     f"{cell(row, 'final_old_acc')} | {cell(row, 'final_new_acc')} | {cell(row, 'stability_gap')} | "
                     f"{row['samples_seen'][0]:.0f} | {cell(row, 'train_flops', 1e12)} | {cell(row, 'train_s')} |")
    return "\n".join(lines) + "\n"


def write(out: Path, prov: dict, runs: dict, made: dict) -> None:
    """`made`: each stream's own provenance (streams may come from different invocations)."""
    summary, overview_rows = summarize(runs), overview(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps({"provenance": prov, "streams": made, "overview": overview_rows,
                                                "summary": summary, "runs": runs}, indent=2))
    (out / "peers.md").write_text(markdown(prov, made, summary, overview_rows, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--peers", type=peer_names, default=list(PEERS))
    parser.add_argument("--set", action="append", default=[], help="a params override for every run, key=value")
    parser.add_argument("--work", type=Path, default=Path("work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--report", action="store_true", help="only re-render peers.md from peers.json")
    args = parser.parse_args()
    if args.report:
        saved = json.loads((args.out / "peers.json").read_text())
        return write(args.out, saved["provenance"], saved["runs"], saved.get("streams", {}))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start, params = time.perf_counter(), load_params(Path("params.yaml"), args.set)
    prov = {"commit": git_commit(), "code_hash": engine_code(), "params_hash": params.digest(), "machine": machine(),
            "torch": torch.__version__, "avalanche": importlib.metadata.version("avalanche-lib"), "seeds": args.seeds,
            "memory": MEMORY, "command": "python -m benchmarks.peers " + " ".join(sys.argv[1:])}
    saved = json.loads((args.out / "peers.json").read_text()) if (args.out / "peers.json").exists() else {}
    same = ("code_hash", "params_hash", "machine", "avalanche", "memory", "seeds")
    kept = all(saved.get("provenance", {}).get(k) == prov[k] for k in same)
    runs, made = (saved["runs"], saved.get("streams", {})) if kept else ({}, {})
    for stream in args.streams.split(","):  # another invocation's streams are kept when made the same way
        if stream == "production":
            versions = materialize_versions(args.work / "production" / "data", PRODUCTION_VERSIONS)
            runtime = benchmark_runtime(args.work / "production" / "features")
        else:
            spec = SimpleNamespace(imagefolder=None, per_class=500, test_per_class=200, streams=[stream],
                                   growth_from=None, growth_to=None)
            versions = materialize_streams(args.work / "peers" / "data", spec)[stream]
            runtime = benchmark_runtime(args.work / "peers" / "features")
        manifests = [build_manifest(v) for v in versions]  # hashed once per stream, not per run
        runs[stream] = {"update": [], **{name: [] for name in args.peers}}
        made[stream] = {k: prov[k] for k in ("commit", "command")}
        for seed in range(args.seeds):
            params = load_params(Path("params.yaml"), [*args.set, f"seed={seed}"])
            chain = project_chain(stream, versions, manifests, seed, args.work, runtime, args)
            runs[stream]["update"].append(_project_rows(chain))
            for name in args.peers:
                runs[stream][name].append(run_peer(name, seed, versions, manifests, chain, params, runtime))
                made[stream]["seconds"] = round(time.perf_counter() - start)
                write(args.out, prov, runs, made)


if __name__ == "__main__":
    main()
