"""The runtime: device choice, bf16 autocast, the streaming input path, any input size. The CPU suite runs all of it
on the CPU (conftest sets PIPELINE_DEVICE=cpu); the GPU tests at the end skip cleanly without CUDA."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.cli import main
from pipeline.config import load_params
from pipeline.device import DeviceError, autocast, resolve_device, resolve_precision
from pipeline.gate import judge
from pipeline.model import load_model
from pipeline.model.feature_cache import FeatureCache
from pipeline.runtime import Runtime
from pipeline.train import run_session
from tests.conftest import TINY, empty_params, tiny_params
from tests.test_features import COSTS, same_weights

# Stated tolerance of bf16 autocast against fp32 (and of fp16-cached features against uncached ones), on every final
# accuracy of the tiny stream (240 test images, 0.4 points each): measured identical here; the reduced mantissa
# moves a few borderline predictions at most.
BF16_ACC_TOLERANCE = 3.0
ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_device_choice_is_the_cpu_here_and_a_missing_gpu_is_a_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device is visible.*--device cpu"):
            resolve_device("cuda:0")


def test_unavailable_device_on_the_command_line_is_an_error_before_anything_is_written(stream, base_model, tmp_path,
                                                                                       capsys):
    out = tmp_path / "out"
    device = "cuda:7" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    code = main(["update", "--parent", str(base_model), "--data", str(stream[1]), "--out", str(out),
                 "--device", device, "--params", str(empty_params(tmp_path)), *[a for s in TINY for a in ("--set", s)]])
    assert code == 2 and f"--device {device}" in capsys.readouterr().err
    assert not out.exists()


def test_streamed_inputs_give_the_in_memory_model_bit_for_bit(tmp_path, stream, base_model, sgm_update):
    """A memory budget below the run's decoded images: batches stream through DataLoader workers, same order."""
    metrics = run_session(base_model, stream[1], tmp_path / "streamed", tiny_params(), "sgm",
                     runtime=Runtime(memory_mb=1, workers=2))
    assert metrics["streamed"] and not sgm_update[1]["streamed"]
    assert {k: v for k, v in metrics.items() if k not in COSTS | {"streamed"}} == \
           {k: v for k, v in sgm_update[1].items() if k not in COSTS | {"streamed"}}
    assert same_weights(tmp_path / "streamed", sgm_update[0])


def test_feature_cache_beyond_the_memory_budget_falls_back_to_streaming(tmp_path, stream, base_model, sgm_update):
    runtime = Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100), memory_mb=1, workers=0)
    metrics = run_session(base_model, stream[1], tmp_path / "out", tiny_params(), "sgm", runtime=runtime)
    assert metrics["streamed"] and not metrics["feature_cache"]
    assert same_weights(tmp_path / "out", sgm_update[0])


def test_gate_and_evaluate_stream_beyond_the_memory_budget_with_the_same_result(stream, base_model, sgm_update,
                                                                                tmp_path, monkeypatch):
    rules = tiny_params().gate
    in_memory = judge(sgm_update[0], base_model, stream[1], rules)
    streamed = judge(sgm_update[0], base_model, stream[1], rules, Runtime(memory_mb=1))
    assert streamed == in_memory
    monkeypatch.setenv("PIPELINE_MEMORY_BUDGET_MB", "1")
    assert main(["evaluate", "--model", str(sgm_update[0]), "--data", str(stream[1]),
                 "--output", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["all_acc"] == sgm_update[1]["final_all_acc"]


def test_bf16_autocast_matches_fp32_within_the_stated_tolerance(tmp_path, stream, base_model, sgm_update):
    metrics = run_session(base_model, stream[1], tmp_path / "bf16", tiny_params("update.precision=bf16"), "sgm")
    assert metrics["precision"] == "bf16" and sgm_update[1]["precision"] == "fp32"
    for key in ("final_old_acc", "final_new_acc", "final_all_acc"):
        assert abs(metrics[key] - sgm_update[1][key]) <= BF16_ACC_TOLERANCE, (key, metrics[key], sgm_update[1][key])
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}  # checkpoints stay fp32
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16


def test_any_input_size_works_end_to_end(tmp_path, stream):
    """224 px (the backbones' native size) through training, a cached-feature update (fp16 features at this
    size), evaluation; the fp16 cache's rounding moves accuracy within the bf16 tolerance."""
    size = ["model.img_size=224", "train.epochs=1", "update.max_iters=4", "update.min_iters=4"]
    run_session(None, stream[0], tmp_path / "base", tiny_params(*size))
    metrics = run_session(tmp_path / "base", stream[1], tmp_path / "sgm", tiny_params(*size), "sgm",
                     runtime=Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100)))
    assert metrics["feature_cache"] and metrics["iterations"] == 4
    shards = list((tmp_path / "cache").glob("*-fp16/*.npy"))
    assert shards and all(np.load(shard, allow_pickle=False).dtype == np.float16 for shard in shards)
    uncached = run_session(tmp_path / "base", stream[1], tmp_path / "uncached", tiny_params(*size), "sgm")
    assert abs(uncached["final_all_acc"] - metrics["final_all_acc"]) <= BF16_ACC_TOLERANCE
    model, card = load_model(tmp_path / "sgm")
    assert card["model"]["img_size"] == 224
    assert main(["evaluate", "--model", str(tmp_path / "sgm"), "--data", str(stream[1]),
                 "--output", str(tmp_path / "eval.json")]) == 0
    # the session's final accuracy read the fp16 cached features, the evaluation decodes the images at fp32: equal up to
    # the cache's rounding (an exact match would hold only where no image sits at a tie on this CPU's arithmetic)
    evaluated = json.loads((tmp_path / "eval.json").read_text())["all_acc"]
    assert abs(evaluated - metrics["final_all_acc"]) <= BF16_ACC_TOLERANCE


def test_gpu_profile_is_params_yaml_at_224_px_with_larger_batches():
    gpu, cpu = load_params(ROOT / "params-gpu.yaml").model_dump(), load_params(ROOT / "params.yaml").model_dump()
    changed = {(section, key) for section, values in cpu.items() if isinstance(values, dict)
               for key, value in values.items() if gpu[section][key] != value}
    assert changed == {("model", "img_size"), ("train", "batch_size"), ("update", "batch_size")}
    assert gpu["model"]["img_size"] == 224


def test_nproc_must_be_positive(stream, tmp_path, capsys):
    assert main(["train", "--data", str(stream[0]), "--out", str(tmp_path / "m"), "--nproc", "0"]) == 2
    assert "--nproc 0: give 1 or more" in capsys.readouterr().err and not (tmp_path / "m").exists()


@CUDA
def test_cuda_update_matches_the_cpu_within_tolerance(tmp_path, stream, base_model, sgm_update):
    metrics = run_session(base_model, stream[1], tmp_path / "cuda", tiny_params(), "sgm",
                     runtime=Runtime(device=resolve_device("cuda")))
    assert metrics["device"] == "cuda" and metrics["precision"] == "bf16"
    for key in ("final_old_acc", "final_new_acc", "final_all_acc"):
        assert abs(metrics[key] - sgm_update[1][key]) <= BF16_ACC_TOLERANCE, (key, metrics[key])
    load_model(tmp_path / "cuda")  # a verified fp32 checkpoint, loadable on the CPU


@CUDA
def test_cuda_streamed_update_and_gate(tmp_path, stream, base_model, sgm_update, monkeypatch):
    runtime = Runtime(device=resolve_device("cuda"), memory_mb=1, workers=2)
    metrics = run_session(base_model, stream[1], tmp_path / "cuda", tiny_params(), "sgm", runtime=runtime)
    assert metrics["streamed"] and metrics["device"] == "cuda"
    decisions = {}
    for device in ("cuda", "cpu"):  # the same candidate judged on the GPU and on the CPU, each predicting afresh
        monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / f"cache-{device}"))
        out = tmp_path / f"gate-{device}.json"
        code = main(["gate", "--candidate", str(tmp_path / "cuda"), "--champion", str(base_model), "--data",
                     str(stream[1]), "--device", device, "--no-record", "--output", str(out)])
        decisions[device] = code, json.loads(out.read_text())
    (cuda_code, on_cuda), (cpu_code, on_cpu) = decisions["cuda"], decisions["cpu"]
    assert cuda_code == cpu_code and on_cuda["decision"] == on_cpu["decision"], (on_cuda, on_cpu)
    for key in ("old_acc_drop", "old_acc_drop_bound", "new_acc", "all_acc"):
        assert abs(on_cuda["evidence"][key] - on_cpu["evidence"][key]) <= BF16_ACC_TOLERANCE, key


def test_the_throughput_benchmarks_bare_steps_run_every_methods_session(stream, base_model):
    """The GPU benchmark's raw rate drives each method's session directly (it imports with the engine alone)."""
    from benchmarks.throughput import raw_rate
    from pipeline.data import ImageSet, build_manifest

    _, card = load_model(base_model)
    manifest = build_manifest(stream[0])
    pool = ImageSet.load(stream[0], manifest.entries("train"), card["class_names"], card["model"]["img_size"])
    for method in ("sgm", "vanilla", "retrain"):
        model, _ = load_model(base_model)
        assert raw_rate(model, method, len(card["class_names"]), tiny_params(), Runtime(), "fp32", pool, 1) > 0
