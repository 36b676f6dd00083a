"""The frozen trunk: the backbone modules that run before the first trained one.

No method trains them and their BatchNorm layers stay in eval mode, so without augmentation their output depends
on the image alone: it can be computed once per image and cached (pipeline/model/feature_cache.py). `Trunk.attach`
makes a model take those features as its input; `detach` gives the whole network back.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pipeline.model.classifier import INFERENCE_BATCH, Classifier


class _Captured(Exception):  # noqa: N818 - control flow: stops the forward pass at the trunk's end
    def __init__(self, value: torch.Tensor):
        self.value = value


def _identity(x, *args, **kwargs):
    return x


@dataclass(frozen=True)
class Trunk:
    skipped: tuple[str, ...]  # the outermost backbone modules that finish before the first trained one
    entry: str  # the module whose input is the trunk's output (the cached feature)
    key: str  # hash of everything the features depend on: backbone, input size and normalisation, weights, torch

    @classmethod
    def split(cls, model: Classifier, trainable: list[str], img_size: int) -> Trunk | None:
        """The split of `model` before its first module in `trainable`, checked on a probe batch to give the
        same logits as the whole network; None when there is nothing frozen or the architecture does not split
        (a later module reading an early activation directly)."""
        events: list[tuple[str, str]] = []
        modules = dict(model.backbone.named_modules())
        hooks = [m.register_forward_pre_hook(lambda _m, _a, n=name: events.append(("pre", n)))
                 for name, m in modules.items() if name]
        hooks += [m.register_forward_hook(lambda _m, _a, _o, n=name: events.append(("post", n)))
                  for name, m in modules.items() if name]
        probe = torch.randint(0, 256, (2, 3, img_size, img_size), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                expected = model(model.normalize(probe))
        finally:
            for hook in hooks:
                hook.remove()
        try:
            return cls._checked(model, events, set(trainable), img_size, probe, expected)
        finally:
            model.train(was_training)

    @classmethod
    def _checked(cls, model: Classifier, events: list[tuple[str, str]], trained: set[str], img_size: int,
                 probe: torch.Tensor, expected: torch.Tensor) -> Trunk | None:
        first = next((i for i, (kind, name) in enumerate(events) if kind == "pre" and name in trained), None)
        done = [name for kind, name in events[:first] if kind == "post"]
        if first is None or not done:
            return None
        last_done = max(i for i, (kind, _) in enumerate(events[:first]) if kind == "post")
        entry = events[last_done + 1][1]
        skipped = tuple(n for n in done if not any(n.startswith(f"{o}.") for o in done))
        digest = hashlib.sha256(f"{type(model.backbone).__name__}|{img_size}|{skipped}|{torch.__version__}|"
                                f"{model.mean.flatten().tolist()}|{model.std.flatten().tolist()}".encode())
        for name, tensor in sorted(model.backbone.state_dict().items()):
            if name.startswith(tuple(f"{s}." for s in skipped)):
                digest.update(name.encode() + tensor.detach().contiguous().cpu().numpy().tobytes())
        trunk = cls(skipped, entry, digest.hexdigest())
        features = trunk.features(model, probe)
        with torch.no_grad(), trunk.attached(model):
            got = model(model.normalize(features))
        return trunk if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) else None

    @torch.no_grad()
    def features(self, model: Classifier, images: torch.Tensor, batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
        """Trunk output for uint8 images [N, 3, H, W], float32 on the CPU, computed in eval mode on the model's
        device."""
        was_training = model.training
        model.eval()
        entry = model.backbone.get_submodule(self.entry)

        def stop(_module, args):
            raise _Captured(args[0])

        hook = entry.register_forward_pre_hook(stop)
        out = []
        try:
            for i in range(0, len(images), batch_size):
                try:
                    model.backbone(model.normalize(images[i:i + batch_size]))
                except _Captured as captured:
                    out.append(captured.value.float().cpu().contiguous())
        finally:
            hook.remove()
            model.train(was_training)
        return torch.cat(out)

    def attach(self, model: Classifier) -> None:
        """From now on `model` takes trunk features instead of images (`normalize` passes them through)."""
        for name in self.skipped:
            model.backbone.get_submodule(name).forward = _identity
        model.takes_features = True

    def detach(self, model: Classifier) -> None:
        for name in self.skipped:
            vars(model.backbone.get_submodule(name)).pop("forward", None)
        model.takes_features = False

    @contextlib.contextmanager
    def attached(self, model: Classifier) -> Iterator[None]:
        self.attach(model)
        try:
            yield
        finally:
            self.detach(model)
