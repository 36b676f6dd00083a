"""`pipeline`: the command line a person and dvc.yaml use."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_params, load_settings

EXIT_REJECT, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130


def _params(args):
    if args.params and not Path(args.params).is_file():
        raise ConfigError(f"--params {args.params}: no such file; give an existing params.yaml, or leave --params "
                          "out to use ./params.yaml ($PIPELINE_PARAMS_FILE)")
    return load_params(Path(args.params or load_settings().params_file), args.set)


def _registry():
    from pipeline.registry import open_registry

    return open_registry(load_settings())


def _model_dir(ref: str) -> Path:
    """A model directory, or `@champion` / `@challenger` / `@v0003` from the registry (fetched and verified)."""
    return _registry().fetch(ref[1:]) if ref.startswith("@") else Path(ref)


def _data_version(args) -> str | None:
    from pipeline.data.versions import data_version_of

    return args.data_version or data_version_of(Path(args.data))


def cmd_data(args) -> None:
    from pipeline.data.fashion_mnist import materialize, parse_classes

    written = materialize(load_settings().fashion_mnist_dir, Path(args.out), parse_classes(args.classes),
                          args.train_per_class, args.test_per_class)
    print(f"wrote {written['train']} train and {written['test']} test images under {args.out}")


def _runtime(args):
    from pipeline.runtime import runtime

    return runtime(load_settings(), args.device)


def _processes(args, device) -> int:
    """--nproc, by default one per visible GPU on a GPU host (1 on the CPU, and inside torchrun's processes)."""
    from pipeline.device import visible_gpus

    if "WORLD_SIZE" in os.environ:
        return 1
    if args.nproc is None:  # every GPU, unless one was named (cuda:N)
        named = ":" in (args.device or load_settings().device)
        return max(1, visible_gpus()) if device.type == "cuda" and not named else 1
    if args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: give 1 or more")
    return args.nproc


def _torchrun(args, nproc: int, extra: list[str]) -> int:
    """This train/update again under torchrun, `nproc` processes on this host (DDP)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "pipeline.cli", args.command, "--data", args.data, "--out", args.out, *extra]
    command += ["--params", args.params] if args.params else []
    command += ["--device", args.device] if args.device else []
    command += [arg for override in args.set for arg in ("--set", override)]
    command += ["--data-version", version] if (version := _data_version(args)) else []
    if subprocess.call(command):  # a failed rank: torchrun ends the others and exits 1, which here would mean reject
        print(f"error: a process of `pipeline {args.command} --nproc {nproc}` failed (torchrun's report above); "
              f"the others were stopped and nothing was written to {args.out}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_session(args) -> int | None:
    """`train`: the retrain's recipe on all data; `update`: a session from --parent. One session either way."""
    from pipeline.data import build_manifest
    from pipeline.gate import preflight
    from pipeline.methods import method_name
    from pipeline.train import distributed, run_session

    update = args.command == "update"
    parent, runtime, params = _model_dir(args.parent) if update else None, _runtime(args), _params(args)
    method = args.method if update else "retrain"
    if method not in (None, "auto"):
        method = method_name(method)  # a wrong name is the first error, before the data is read
    nproc = _processes(args, runtime.device)
    # torchrun's ranks build their own
    manifest = build_manifest(Path(args.data), runtime.hashes) if update or nproc == 1 else None
    if update and distributed.rank() == 0:  # before anything trains: a split the gate could not decide on is an error
        preflight(manifest, parent, params.gate)
    if nproc > 1:  # the registry is read once, here; the ranks get the folder
        return _torchrun(args, nproc, ["--parent", str(parent), *(["--method", method] if method else [])]
                         if update else [])
    metrics = run_session(parent, Path(args.data), Path(args.out), params, method,
                          data_version=_data_version(args), manifest=manifest, runtime=runtime)
    if distributed.rank() == 0:
        _print_metrics(metrics)
    return None


def cmd_evaluate(args) -> None:
    from pipeline.data import build_manifest
    from pipeline.evaluate import accuracy_report, predict
    from pipeline.model import load_model
    from pipeline.runtime import load_split

    runtime = _runtime(args)
    model, card = load_model(_model_dir(args.model), runtime.device)
    manifest = build_manifest(Path(args.data), runtime.hashes)
    test = load_split(Path(args.data), manifest.entries("test"), card["class_names"], card["model"]["img_size"],
                      runtime)
    old = card.get("old_classes") or card["class_names"]
    report = {"model": args.model, "manifest_digest": manifest.digest(),
              **accuracy_report(predict(model, test), test.targets, card["class_names"], len(old))}
    Path(args.output).write_text(json.dumps(report, indent=2))
    _print_metrics(report)


def cmd_gate(args) -> int:
    from pipeline.gate import explain, headline, judge
    from pipeline.model import update_card

    reference = args.reference
    if reference == "@reference":  # the registry's: None when the champion is itself the last retrain-made model
        reference = f"@{found}" if (found := _registry().reference()) else None
    result = judge(_model_dir(args.candidate), _model_dir(args.champion), Path(args.data), _params(args).gate,
                   _runtime(args), _model_dir(reference) if reference else None)
    print(explain(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(headline(result), indent=2))
    if args.record and not args.candidate.startswith("@"):  # registered versions are immutable
        update_card(Path(args.candidate), gate=result)
    return 0 if result["decision"] == "promote" else EXIT_REJECT


def cmd_predict(args) -> None:
    from pipeline.inference import find_images, predict_files, write_rows
    from pipeline.model import load_model

    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: give 1 or more")
    model, card = load_model(_model_dir(args.model), _runtime(args).device)
    files = find_images([Path(p) for p in args.data])
    rows = predict_files(model, card["class_names"], card["model"]["img_size"], files, args.top_k, args.on_error)
    counts = write_rows(rows, Path(args.output) if args.output else None)
    where = f" -> {args.output}" if args.output else ""
    print(f"predicted {counts['images'] - counts['unreadable']} of {counts['images']} images{where}"
          + (f"; {counts['unreadable']} unreadable (see the error column)" if counts["unreadable"] else ""),
          file=sys.stderr)


def cmd_export(args) -> None:
    from pipeline.export import export_onnx
    from pipeline.model import load_model

    model, card = load_model(_model_dir(args.model))
    _print_metrics(export_onnx(model, card, Path(args.out), args.tolerance))


def cmd_report(args) -> None:
    from pipeline.gate import judge
    from pipeline.model import load_card
    from pipeline.report import candidate_report

    candidate = _model_dir(args.candidate)
    if args.gate:
        try:
            result = json.loads(Path(args.gate).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"--gate {args.gate}: not JSON ({err}); give the file `pipeline gate --output` wrote") \
                from err
        if not isinstance(result, dict) or not {"decision", "checks", "evidence"} <= result.keys():
            raise ConfigError(f"--gate {args.gate}: not a gate result; give the file `pipeline gate --output` wrote")
    else:
        result = judge(candidate, _model_dir(args.champion), Path(args.data), _params(args).gate, _runtime(args))
    print(candidate_report(candidate, load_card(candidate), result, Path(args.out)))


def cmd_register(args) -> None:
    registry = _registry()
    version = registry.register(Path(args.model), note=args.note)
    print(f"registered {args.model} as {version} in {registry.store.description}")
    if args.alias == "champion":
        registry.promote(version, args.note)
    elif args.alias:
        registry.set_alias(args.alias, version, args.note)
    if args.alias:
        print(f"{args.alias} -> {version}")


def cmd_fetch(args) -> None:
    print(_model_dir(args.ref))


def cmd_promote(args) -> None:
    record = _registry().promote(args.version, args.reason, force=args.force)
    print(f"champion -> {record['version']} (was {record['previous']})")


def cmd_rollback(args) -> None:
    record = _registry().rollback(args.reason)
    print(f"champion rolled back -> {record['version']} (was {record['previous']})")


def cmd_status(args) -> None:
    status = _registry().status()
    if args.json:
        _print_metrics(status)
        return
    print(f"registry: {status['registry']}")
    for name, record in status["aliases"].items():
        print(f"{name}: {record['version'] if record else '-'}")
    if status["champion"]:
        info = status["champion"]
        metrics = info.get("metrics", {})
        print(f"champion data version: {info['data_version']}  classes: {len(info['class_names'])}  "
              f"all-class acc: {metrics.get('final_all_acc')}  old-class acc: {metrics.get('final_old_acc')}")
    print("history:")
    for event in status["history"]:
        print(f"  {event['at']}  {event['action']:<9} {event['version']}  {event.get('reason', '')}")


def _print_metrics(metrics: dict) -> None:
    print(json.dumps(metrics, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="materialize a dataset as an ImageFolder tree")
    data_kind = data.add_subparsers(dest="dataset", required=True)
    fmnist = data_kind.add_parser("fashion-mnist", help="from Debian's dataset-fashion-mnist files")
    fmnist.add_argument("out")
    fmnist.add_argument("--classes", default="0-9", help="e.g. 0-5 or 6,7")
    fmnist.add_argument("--train-per-class", type=int, default=None)
    fmnist.add_argument("--test-per-class", type=int, default=None)
    fmnist.set_defaults(run=cmd_data)

    def with_params(sub):
        sub.add_argument("--params", default=None, help="params.yaml (default: $PIPELINE_PARAMS_FILE or ./params.yaml)")
        sub.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override one parameter, e.g. --set update.max_iters=100")
        return sub

    def with_data(sub):
        sub.add_argument("--data", required=True, help="ImageFolder root (train/<class>/..., test/<class>/...)")
        sub.add_argument("--data-version", default=None, help="recorded in the card (default: md5 from DATA.dvc)")
        return sub

    def with_device(sub):
        sub.add_argument("--device", default=None, metavar="DEVICE",
                         help="auto | cpu | cuda | cuda:N (default: $PIPELINE_DEVICE, else auto: CUDA when present)")
        return sub

    def with_nproc(sub):
        sub.add_argument("--nproc", type=int, default=None, metavar="N",
                         help="train with N data-parallel processes on this host (torchrun + DDP; default: one per "
                              "visible GPU on CUDA, else 1); for several hosts run `torchrun ... -m pipeline.cli` "
                              "yourself (docs/scale.md)")
        return with_device(sub)

    model_ref = "a model directory or @champion / @challenger / @vNNNN from the registry"
    train = with_nproc(with_data(with_params(commands.add_parser("train",
                                                                 help="train a base model (or retrain) on all data"))))
    train.add_argument("--out", required=True)
    train.set_defaults(run=cmd_session)

    update = with_nproc(with_data(with_params(commands.add_parser("update",
                                                                  help="update a parent model on newly arrived data"))))
    update.add_argument("--parent", required=True, help=model_ref)
    update.add_argument("--out", required=True)
    update.add_argument("--method", default=None,
                        help="auto | sgm | vanilla | retrain | warm_start (default: update.method)")
    update.set_defaults(run=cmd_session)

    evaluate = with_device(commands.add_parser("evaluate", help="old/new/all/per-class accuracy on the test split"))
    evaluate.add_argument("--model", required=True, help=model_ref)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--output", default="evaluation.json")
    evaluate.set_defaults(run=cmd_evaluate)

    gate = with_device(with_params(commands.add_parser("gate", help="candidate vs champion: exit 0 promote, 1 "
                                                                    "reject, 2 error")))
    gate.add_argument("--candidate", required=True, help=model_ref)
    gate.add_argument("--champion", default="@champion", help=model_ref)
    gate.add_argument("--data", required=True)
    gate.add_argument("--reference", default=None, help="also hold the candidate within the margin of this fixed "
                      "earlier model; @reference: the registry's (the last champion a retrain made, as the "
                      "update-model flow does)")
    gate.add_argument("--output", default=None, help="also write the decision and its evidence as JSON here")
    gate.add_argument("--metrics", default=None, help="also write the headline numbers, flat, here (for DVC)")
    gate.add_argument("--no-record", dest="record", action="store_false",
                      help="do not add the decision to the candidate's card.json (e.g. a DVC stage output)")
    gate.set_defaults(run=cmd_gate)

    predict = with_device(commands.add_parser("predict", help="predict the class of image files (CSV or JSON Lines, "
                                                              "a row each)"))
    predict.add_argument("--model", required=True, help=model_ref)
    predict.add_argument("--data", required=True, nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--output", default=None, help="predictions.csv or .jsonl (default: CSV on stdout)")
    predict.add_argument("--top-k", type=int, default=3, help="classes listed per image, most probable first")
    predict.add_argument("--on-error", choices=["report", "fail"], default="report",
                         help="an unreadable image: a row with its error (default), or stop before writing")
    predict.set_defaults(run=cmd_predict)

    export = commands.add_parser("export", help="export a model to ONNX (normalisation inside; checked with "
                                                "onnxruntime)")
    export.add_argument("--model", required=True, help=model_ref)
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", required=True, help="e.g. model.onnx")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference in probabilities to the torch model that is accepted")
    export.set_defaults(run=cmd_export)

    report = with_device(with_params(commands.add_parser(
        "report", help="markdown report of a candidate against the champion (e.g. a pull-request comment)")))
    report.add_argument("--candidate", required=True, help=model_ref)
    report.add_argument("--champion", default="@champion", help=model_ref)
    report.add_argument("--data", required=True)
    report.add_argument("--gate", default=None, help="a `pipeline gate --output` file (else the gate runs here)")
    report.add_argument("--out", required=True, help="folder for report.md and its curve")
    report.set_defaults(run=cmd_report)

    register = commands.add_parser("register", help="add a model directory to the registry as a new version")
    register.add_argument("model")
    register.add_argument("--alias", choices=["champion", "challenger"], default=None, help="then point it here")
    register.add_argument("--note", default="")
    register.set_defaults(run=cmd_register)

    fetch = commands.add_parser("fetch", help="download and verify a registered version; prints its local folder")
    fetch.add_argument("ref", help="@champion, @challenger or @vNNNN")
    fetch.set_defaults(run=cmd_fetch)

    promote = commands.add_parser("promote", help="make a registered version the champion")
    promote.add_argument("version", help="vNNNN or challenger")
    promote.add_argument("--reason", default="manual promotion")
    promote.add_argument("--force", action="store_true", help="promote even a version the gate rejected")
    promote.set_defaults(run=cmd_promote)

    rollback = commands.add_parser("rollback", help="champion back to the version it replaced")
    rollback.add_argument("--reason", default="")
    rollback.set_defaults(run=cmd_rollback)

    status = commands.add_parser("status", help="champion, its data version and metrics, the history")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun: only rank 0 logs progress
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.command in {"train", "update"}:
            from pipeline.device import resolve_device
            from pipeline.train import distributed

            distributed.init_from_env(resolve_device(args.device or load_settings().device))
        return args.run(args) or 0
    except (ValueError, OSError) as err:  # ConfigError, DataError, CheckpointError, GateError, Registry/StoreError
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # a model directory is renamed into place only when complete: nothing half-written
        print(f"interrupted: pipeline {args.command} stopped; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
