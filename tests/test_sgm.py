"""Each SGM piece does what it claims, on a tiny real stream."""

import torch
import torch.nn.functional as F

from pipeline.config import Settings  # noqa: F401  (documents where the stream comes from)
from pipeline.data import ImageSet, build_manifest
from pipeline.evaluate import predict
from pipeline.methods import prepare_sgm
from pipeline.methods.plan import Plan
from pipeline.methods.sgm_parts import (
    DynamicSoftTargets,
    WeightAverage,
    add_lora,
    lora_targets,
    merge_lora,
)
from pipeline.model import load_model, trainable_groups
from pipeline.train import run_session
from tests.conftest import tiny_params


def _plan(train: ImageSet, params) -> Plan:
    """A class-incremental session's plan: the 4 base classes, then coat and sandal."""
    return Plan("sgm", params.update, train.class_names, 4, [], 0, draw=None, from_parent=True)


def _v2(stream, card):
    manifest = build_manifest(stream[1])
    names = card["class_names"] + ["coat", "sandal"]
    size = card["model"]["img_size"]
    return (ImageSet.load(stream[1], manifest.entries("train"), names, size),
            ImageSet.load(stream[1], manifest.entries("test"), names, size))


def _old_acc(model, test, n_old):
    old = test.subset(test.targets < n_old)
    return 100.0 * (predict(model, old) == old.targets).float().mean().item()


def test_scaled_data_driven_init_keeps_old_accuracy_at_iteration_zero(stream, base_model):
    model, card = load_model(base_model)
    train, test = _v2(stream, card)
    before = _old_acc(model, test, 4)
    trainer = prepare_sgm(model, _plan(train, tiny_params()), train, tiny_params())
    after = _old_acc(trainer.model, test, 4)
    assert before > 60  # the base model learnt something
    assert after >= before - 2.0, (before, after)
    assert trainer.info["init_scale"] > 0
    # the new rows point at their class means: each new class is recognised far above chance already
    new = test.subset(test.targets >= 4)
    assert (predict(trainer.model, new) == new.targets).float().mean() > 0.2  # chance: 1/6


def test_unscaled_literal_mean_would_hurt_old_classes_more_than_the_calibrated_init(stream, base_model):
    model, card = load_model(base_model)
    train, test = _v2(stream, card)
    before = _old_acc(model, test, 4)
    loose_params = tiny_params("sgm.lora=false", "sgm.init_max_old_drop=100")
    trainer = prepare_sgm(model, _plan(train, loose_params), train, loose_params)
    loose, loose_scale = _old_acc(trainer.model, test, 4), trainer.info["init_scale"]
    model, _ = load_model(base_model)
    trainer = prepare_sgm(model, _plan(train, tiny_params()), train, tiny_params("sgm.lora=false"))
    calibrated = _old_acc(trainer.model, test, 4)
    # measured: 95.6 before; the uncalibrated mean (scale 0.54) 93.1; the calibrated init (scale 0.32) 95.6
    assert trainer.info["init_scale"] < loose_scale  # the calibration chose a smaller scale...
    assert calibrated > loose and calibrated >= before - 1.0, (before, loose, calibrated)  # ...that keeps them


def test_soft_target_rows_sum_to_one_with_true_class_weight_between_half_and_one():
    torch.manual_seed(0)
    soft = DynamicSoftTargets(num_classes=10, n_old=6)
    for _ in range(20):  # running means fill in as old samples are classified correctly
        logits = torch.randn(64, 10) * 3
        targets = torch.randint(0, 10, (64,))
        logits[torch.arange(64), targets] += 2
        rows = soft(logits, targets)
        assert torch.allclose(rows.sum(1), torch.ones(64))
        true_weight = rows[torch.arange(64), targets]
        assert torch.all(true_weight >= 0.5) and torch.all(true_weight <= 1.0)
    assert soft.counts.sum() > 0


def test_lora_merge_preserves_outputs_and_adapters_get_gradients_all_session(base_model):
    model, card = load_model(base_model)
    targets = lora_targets(model, trainable_groups(model, 1))
    assert targets
    wrapped = add_lora(model, targets, rank=4, alpha=4, dropout=0.0)
    adapters = [p for n, p in wrapped.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(adapters, lr=0.05)
    x = torch.randn(16, 3, 32, 32)
    y = torch.randint(0, 4, (16,))
    wrapped.train()
    for step in range(5):
        optimizer.zero_grad()
        F.cross_entropy(wrapped(x), y).backward()
        # B starts at zero (the adapter starts as a no-op), so A's first gradient is zero; then both learn
        expected = ("lora_B",) if step == 0 else ("lora_A", "lora_B")
        grads = [p.grad for n, p in wrapped.named_parameters() if any(k in n for k in expected)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), step
        optimizer.step()
    wrapped.eval()
    with torch.no_grad():
        unmerged = wrapped(x)
        merged_model = merge_lora(wrapped).eval()
        merged = merged_model(x)
    assert not any("lora" in n for n, _ in merged_model.named_modules())
    assert torch.allclose(unmerged, merged, atol=1e-4, rtol=1e-4)
    original, _ = load_model(base_model)
    with torch.no_grad():
        assert not torch.allclose(original.eval()(x), merged, atol=1e-3)  # the adapters did change the model


def test_the_weight_average_is_what_evaluations_see_and_what_ships():
    layer = torch.nn.Linear(3, 2)
    frozen = layer.bias.requires_grad_(False).detach().clone()
    start = layer.weight.detach().clone()
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update()  # halfway from the start to the current weights
    with torch.no_grad(), average.applied():
        assert torch.allclose(layer.weight, start + 0.5)
    assert torch.allclose(layer.weight, start + 1.0)  # the training weights are back after an evaluation
    average.commit()
    assert torch.allclose(layer.weight, start + 0.5) and torch.equal(layer.bias, frozen)  # untrained: untouched


def test_an_averaged_sgm_session_keeps_old_rows_and_ships_other_weights(stream, base_model, sgm_update, tmp_path):
    """The default session averages its weights (sgm.ema_decay); the same session without the average ships its last
    step. The average leaves the training itself alone (the same steps, the same old rows) and ships other weights."""
    assert tiny_params().sgm.ema_decay is not None
    averaged, metrics = sgm_update
    last_step = run_session(base_model, stream[1], tmp_path / "last", tiny_params("sgm.ema_decay=null"), "sgm")
    parent, _ = load_model(base_model)
    child, _ = load_model(averaged)
    plain, _ = load_model(tmp_path / "last")
    for model in (child, plain):
        assert torch.equal(model.head.weight[:4], parent.head.weight)
        assert torch.equal(model.head.bias[:4], parent.head.bias)
    assert not torch.equal(child.head.weight[4:], plain.head.weight[4:])  # the average, not the last step
    assert metrics["iterations"] == last_step["iterations"]
    assert metrics["train_flops"] > metrics["flops_per_step"] * metrics["iterations"]  # the init's embeddings too

