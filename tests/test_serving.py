"""Around the model: the model card, `pipeline predict`, `pipeline export --format onnx`, `pipeline report`."""

import csv
import json
import logging

import numpy as np
import yaml

from pipeline.cli import main
from pipeline.data import ImageSet, build_manifest
from pipeline.evaluate import predict
from pipeline.model import load_model, update_card
from pipeline.progress import Progress
from pipeline.registry import Registry
from pipeline.registry.store import DiskStore
from tests.conftest import REJECTED


def test_every_model_directory_carries_a_model_card_that_registration_keeps(tmp_path, sgm_update, base_model):
    out, metrics = sgm_update
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "timm" and "sgm" in front["tags"]
    scores = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert scores["all-class accuracy (test split, %)"] == metrics["final_all_acc"]
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "](curve.png)" in text
    assert "Not judged yet" in text and "trained from the pretrained" in (base_model / "README.md").read_text()

    copy = tmp_path / "candidate"  # the gate's decision, once recorded, is in the card
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    update_card(copy, gate=REJECTED)
    assert "**reject**: a reason" in (copy / "README.md").read_text()
    registry = Registry(DiskStore(tmp_path / "registry"), tmp_path / "cache")
    version = registry.register(copy)
    assert {"README.md", "curve.png"} <= set(registry.info(version)["files"])


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_predict_writes_a_row_per_image_and_agrees_with_evaluation(tmp_path, stream, sgm_update, capsys):
    out, metrics = sgm_update
    images = tmp_path / "images" / "deep" / "er"  # any layout: found recursively
    images.mkdir(parents=True)
    for i, path in enumerate(sorted((stream[1] / "test").rglob("*.png"))[:5]):
        (images / f"{i}.png").write_bytes(path.read_bytes())
    (images / "broken.jpg").write_bytes(b"not an image")
    assert main(["predict", "--model", str(out), "--data", str(stream[1] / "test"), str(tmp_path / "images"),
                 "--output", str(tmp_path / "p.csv"), "--top-k", "2"]) == 0
    rows = _rows(tmp_path / "p.csv")
    test = [r for r in rows if "/test/" in r["path"]]
    assert len(rows) == len(test) + 6 and sum(bool(r["error"]) for r in rows) == 1
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert "cannot read image" in broken["error"] and not broken["class"]
    assert "1 unreadable" in capsys.readouterr().err

    _, card = load_model(out)  # the same predictions as evaluation: the test split's accuracy is the metric's
    correct = sum(r["class"] == r["path"].split("/")[-2] for r in test)
    assert round(100 * correct / len(test), 2) == metrics["final_all_acc"]
    first = test[0]["top_k"].split(";")
    assert len(first) == 2 and first[0].split(":")[0] == test[0]["class"]
    assert float(first[0].split(":")[1]) >= float(first[1].split(":")[1])

    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "images"), "--output",
                 str(tmp_path / "p.jsonl"), "--on-error", "fail"]) == 2  # refused, the file named, nothing written
    assert "broken.jpg" in capsys.readouterr().err and not list(tmp_path.glob("*p.jsonl*"))
    (images / "broken.jpg").unlink()
    assert main(["predict", "--model", str(out), "--data", str(images / "0.png"), str(images / "1.png"),
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["path"].rsplit("/", 1)[1] for line in lines] == ["0.png", "1.png"]
    assert len(lines[0]["top_k"]) == 3 and lines[0]["error"] is None


def test_onnx_export_matches_the_torch_model_on_real_images(tmp_path, stream, sgm_update, capsys):
    import onnx
    import onnxruntime

    out, _ = sgm_update
    assert main(["export", "--model", str(out), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= 1e-4 and report["checked_batch_sizes"] == [1, 7]
    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    model, card = load_model(out)
    assert json.loads(meta["class_names"]) == card["class_names"] and "uint8" in meta["input"]

    test = ImageSet.load(stream[1], build_manifest(stream[1]).entries("test"), card["class_names"], 32)
    session = onnxruntime.InferenceSession(tmp_path / "m.onnx", providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"images": test.images.numpy()})[0]
    assert np.array_equal(probabilities.argmax(1), predict(model, test).numpy())
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)

    assert main(["export", "--model", str(out), "--out", str(tmp_path / "strict.onnx"), "--tolerance", "-1"]) == 2
    assert "differ from the torch model" in capsys.readouterr().err  # refused: no file, no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_report_compares_the_candidate_with_the_champion(tmp_path, stream, sgm_update, base_model, capsys):
    out, _ = sgm_update
    gate = tmp_path / "gate.json"
    main(["gate", "--candidate", str(out), "--champion", str(base_model), "--data", str(stream[1]), "--no-record",
          "--output", str(gate), "--metrics", str(tmp_path / "metrics.json")])
    headline = json.loads((tmp_path / "metrics.json").read_text())
    assert set(headline) == {"promoted", "all_acc", "old_acc", "new_acc", "old_acc_drop", "flip_rate"}
    assert main(["report", "--candidate", str(out), "--data", str(stream[1]), "--gate", str(gate),
                 "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    result = json.loads(gate.read_text())
    assert text.startswith(f"# Candidate {result['decision'].upper()}") and "| old classes, all outputs |" in text
    assert all(f"| {name} |" in text for name in result["evidence"]["per_class_acc"])
    assert (tmp_path / "report" / "curve.png").is_file()
    assert main(["report", "--candidate", str(base_model), "--data", str(stream[1]), "--gate", str(gate),
                 "--out", str(tmp_path / "other")]) == 2  # a gate result about another model is refused
    assert "run the gate on this candidate" in capsys.readouterr().err


def test_progress_without_a_terminal_logs_a_line_per_tenth(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline"), Progress("work", 1000, "items") as progress:
        for _ in range(1000):
            progress.advance()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("work:")]
    assert len(lines) == 10 and lines[-1] == "work: 1000/1000 items (100%)"
