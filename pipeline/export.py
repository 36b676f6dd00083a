"""`pipeline export --format onnx`: the classifier with its input normalisation inside the graph.

Input `images`: uint8 [batch, 3, H, W] RGB at the card's img_size (batch is dynamic); output `probabilities`
[batch, classes] in the card's class order. The class names, the input spec and the weights' SHA-256 are in the
file's metadata. The export is checked against the torch model with onnxruntime before it is kept."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.files import clean_leftovers, scratch_prefix
from pipeline.model import Classifier

OPSET = 17
CHECK_BATCHES = (1, 7)  # two batch sizes, neither the one traced: proves the batch axis is dynamic
INPUT_SPEC = "uint8 [batch, 3, {size}, {size}] RGB, values 0-255; normalisation is inside the graph"


class ExportError(ValueError):
    """The exported graph disagrees with the torch model (or cannot be built); nothing is kept."""


class _Served(nn.Module):
    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.probabilities(images)


def export_onnx(model: Classifier, card: dict, out: Path, tolerance: float) -> dict:
    """Write `out` (atomically) and return the check's report; ExportError above `tolerance` (probabilities)."""
    import onnx
    import onnxruntime

    served, size = _Served(model).eval(), card["model"]["img_size"]
    generator = torch.Generator().manual_seed(0)
    samples = [torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
               for n in (2, *CHECK_BATCHES)]
    out = Path(out)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out.absolute().parent, out.name)
    fd, tmp = tempfile.mkstemp(prefix=scratch_prefix(out.name), dir=out.absolute().parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():  # the TorchScript exporter: no onnxscript needed
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(served, (samples[0],), tmp, input_names=["images"],
                                  output_names=["probabilities"], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})
            except RuntimeError as err:  # torch.onnx's errors (an operator without an ONNX form, ...)
                raise ExportError(f"ONNX export of {card['model']['backbone']} failed: {str(err)[:500]}") from err
        graph = onnx.load(tmp)
        meta = {"class_names": json.dumps(card["class_names"]), "input": INPUT_SPEC.format(size=size),
                "weights_sha256": card["weights_sha256"], "backbone": card["model"]["backbone"]}
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, tmp)
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            diff = max(float((torch.from_numpy(session.run(None, {"images": x.numpy()})[0]) - served(x)).abs().max())
                       for x in samples[1:])
        if not diff <= tolerance:
            raise ExportError(f"the ONNX graph's probabilities differ from the torch model's by {diff:.2e} > "
                              f"{tolerance:g}; not written (raise --tolerance only if you accept that)")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"out": str(out), "format": "onnx", "opset": OPSET, "input": meta["input"],
            "output": f"float32 probabilities [batch, {len(card['class_names'])}] in class order",
            "classes": card["class_names"], "max_abs_diff": diff, "tolerance": tolerance,
            "checked_batch_sizes": list(CHECK_BATCHES), "bytes": out.stat().st_size}
