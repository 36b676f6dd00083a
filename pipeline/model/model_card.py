"""The model card: README.md in the Hugging Face format (YAML front matter, then markdown) and curve.png, both
generated from card.json, metrics.json and curve.csv of a model directory. Regenerated whenever the card changes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.files import atomic_write
from pipeline.report import gate_lines, plot_old_acc, table, tflops

README, CURVE_PNG = "README.md", "curve.png"


def _front_matter(card: dict, metrics: dict) -> str:
    results = [{"type": "accuracy", "name": f"{what} accuracy (test split, %)", "value": metrics[key]}
               for what, key in (("all-class", "final_all_acc"), ("old-class", "final_old_acc"),
                                 ("new-class", "final_new_acc")) if metrics.get(key) is not None]
    front = {"library_name": "timm", "pipeline_tag": "image-classification",
             "tags": ["image-classification", "timm", "continual-learning", card["model"]["backbone"],
                      card.get("method") or "trained"],
             "metrics": ["accuracy"],
             "model-index": [{"name": f"{card['model']['backbone']}-{card['weights_sha256'][:12]}", "results": [{
                 "task": {"type": "image-classification"},
                 "dataset": {"type": "imagefolder", "name": f"data version {card.get('data_version') or 'unknown'}"},
                 "metrics": results}]}]}
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n"


def render(card: dict, metrics: dict, has_curve: bool) -> str:
    """The README.md text of a model directory with this card and metrics."""
    names, old = card["class_names"], card.get("old_classes") or card["class_names"]
    model, parent, gate = card["model"], card.get("parent"), card.get("gate")
    per_class = metrics.get("per_class_acc", {})
    out = [_front_matter(card, metrics),
           f"# {model['backbone']} image classifier, {len(names)} classes",
           "",
           f"A timm `{model['backbone']}` with a linear head, input {model['img_size']}x{model['img_size']} RGB, "
           f"made by `pipeline {'train' if parent is None else 'update'}` (method `{card.get('method')}`).",
           "",
           "## What it recognises",
           "",
           *table(["index", "class", "since", "test accuracy (%)"],
                   [[i, name, "parent" if name in old and parent else "this version", per_class.get(name)]
                    for i, name in enumerate(names)]),
           "",
           "## Lineage",
           "",
           f"- data version: `{card.get('data_version') or 'unknown'}` (manifest digest "
           f"`{card.get('manifest_digest', '')[:16]}`)",
           "- parent: " + (f"weights `{parent['weights_sha256'][:16]}`, data version "
                           f"`{parent.get('data_version') or 'unknown'}`" if parent else
                           f"none (trained from the pretrained `{model['pretrained']}` backbone)"),
           f"- method: `{card.get('method')}` ({metrics.get('kind', 'first version')}); "
           f"{metrics.get('iterations')} iterations",
           f"- params hash `{card.get('params_hash')}`; created {card.get('created_at')}; "
           f"weights SHA-256 `{card['weights_sha256']}`",
           "",
           "## Accuracy on the test split",
           "",
           *table(["all classes", "old classes", "new classes", "old classes before (parent)", "stability gap",
                    "negative flip rate", "train TFLOPs", "wall (s)"],
                   [[metrics.get("final_all_acc"), metrics.get("final_old_acc"), metrics.get("final_new_acc"),
                     metrics.get("old_acc_before"), metrics.get("stability_gap"), metrics.get("negative_flip_rate"),
                     tflops(metrics.get("train_flops")), metrics.get("wall_s")]]),
           ""]
    if has_curve:
        out += ["## During the update", "", f"![old-class accuracy during the update]({CURVE_PNG})", ""]
    out += ["## Promotion gate", ""]
    if gate:
        out += [f"**{gate['decision']}**: {'; '.join(gate['reasons'])}", "", *gate_lines(gate),
                "", f"Against the champion `{gate['evidence']['champion'][:16]}` on "
                    f"{gate['evidence']['old_test_images']} old-class and {gate['evidence']['new_test_images']} "
                    "new-class test images.", ""]
    else:
        out += ["Not judged yet (`pipeline gate --candidate path/to/this/folder` records the decision here).", ""]
    out += ["## How to use it", "", "```bash",
            "pipeline predict --model path/to/this/folder --data images/ --output predictions.csv",
            "pipeline export --model path/to/this/folder --format onnx --out model.onnx  # uint8 NCHW RGB in, "
            "probabilities out",
            "```", "", "```python", "from pipeline.model import load_model",
            "", "model, card = load_model('path/to/this/folder')  # verifies the SHA-256, no pickle",
            "probabilities = model(model.normalize(uint8_images)).softmax(1)  # uint8 [N, 3, H, W], RGB",
            "```", "",
            "`model.safetensors` holds a timm backbone (`backbone.*`, created with `num_classes=0`) and the head "
            "(`head.weight`, `head.bias`, rows in the class order above); inputs are normalised with the "
            "backbone's mean and std.", ""]
    return "\n".join(out)


def write_model_card(model_dir: Path, card: dict, references: dict[str, float] | None = None) -> None:
    """README.md (and curve.png from curve.csv) in `model_dir`; `references`: reference lines on the curve."""
    model_dir = Path(model_dir)
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else card.get("metrics", {})
    has_curve = (model_dir / "curve.csv").is_file() and metrics.get("stability_gap") is not None
    if has_curve and not (model_dir / CURVE_PNG).is_file():
        refs = {"parent": metrics.get("old_acc_before_eval"), **(references or {})}  # on the same test subset
        plot_old_acc({card.get("method") or "update": model_dir}, model_dir / CURVE_PNG,
                     "old-class accuracy during the update", references=refs)
    atomic_write(model_dir / README, render(card, metrics, has_curve).encode(), "readme:staged")
