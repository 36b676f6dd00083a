"""`pipeline`: the command line a person and dvc.yaml use."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import ConfigError, Settings, load_params

EXIT_ERROR = 2


def _params(args):
    return load_params(Path(args.params or Settings().params_file), args.set)


def cmd_data(args) -> None:
    from pipeline.data.fashion_mnist import materialize, parse_classes

    written = materialize(Settings().fashion_mnist_dir, Path(args.out), parse_classes(args.classes),
                          args.train_per_class, args.test_per_class)
    print(f"wrote {written['train']} train and {written['test']} test images under {args.out}")


def cmd_train(args) -> None:
    from pipeline.train import train

    _print_metrics(train(Path(args.data), Path(args.out), _params(args)))


def cmd_update(args) -> None:
    from pipeline.train import update

    _print_metrics(update(Path(args.parent), Path(args.data), Path(args.out), _params(args), args.method))


def cmd_evaluate(args) -> None:
    from pipeline.data import ImageSet, build_manifest
    from pipeline.evaluate import accuracy_report, predict
    from pipeline.model import load_model

    model, card = load_model(Path(args.model))
    manifest = build_manifest(Path(args.data))
    test = ImageSet.load(Path(args.data), manifest.entries("test"), card["class_names"], card["model"]["img_size"])
    old = card.get("old_classes") or card["class_names"]
    report = {"model": args.model, "data_version": manifest.digest(),
              **accuracy_report(predict(model, test), test.targets, card["class_names"], len(old))}
    Path(args.output).write_text(json.dumps(report, indent=2))
    _print_metrics(report)


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

    train = with_params(commands.add_parser("train", help="train a base model (or retrain) on all data"))
    train.add_argument("--data", required=True)
    train.add_argument("--out", required=True)
    train.set_defaults(run=cmd_train)

    update = with_params(commands.add_parser("update", help="update a parent model on newly arrived data"))
    update.add_argument("--parent", required=True)
    update.add_argument("--data", required=True)
    update.add_argument("--out", required=True)
    update.add_argument("--method", default=None, help="sgm | vanilla | joint (default: update.method)")
    update.set_defaults(run=cmd_update)

    evaluate = commands.add_parser("evaluate", help="old/new/all/per-class accuracy on the test split")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--output", default="evaluation.json")
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from pipeline.data import DataError
    from pipeline.model import CheckpointError

    try:
        args.run(args)
    except (ConfigError, DataError, CheckpointError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
