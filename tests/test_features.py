"""The frozen-trunk feature cache: same model as without it, reused across sessions, self-healing, bounded."""

import json
import os
import time

import torch
from safetensors.torch import load_file

from pipeline.config import load_params
from pipeline.data import HashCache
from pipeline.model import build_classifier, feature_cache, trainable_groups
from pipeline.model.feature_cache import FeatureCache
from pipeline.model.trunk import Trunk
from pipeline.runtime import Runtime
from pipeline.train import run_session
from tests.conftest import tiny_params

COSTS = {"wall_s", "eval_s", "peak_rss_mb", "train_s", "stages_s", "feature_cache", "flops_per_step",
         "train_flops"}


def _shards(root):
    return {p.name: p.stat().st_mtime_ns for p in root.glob("*/*.npy")}


def same_weights(a, b) -> bool:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_cached_update_gives_the_uncached_model_bit_for_bit(tmp_path, stream, base_model, sgm_update):
    cache = FeatureCache(tmp_path / "cache", max_mb=100)
    metrics = run_session(base_model, stream[1], tmp_path / "sgm", tiny_params(), "sgm",
                          runtime=Runtime(features=cache))
    assert metrics["feature_cache"] and not sgm_update[1]["feature_cache"]
    assert {k: v for k, v in metrics.items() if k not in COSTS} == \
           {k: v for k, v in sgm_update[1].items() if k not in COSTS}
    assert same_weights(tmp_path / "sgm", sgm_update[0])
    assert metrics["flops_per_step"] < sgm_update[1]["flops_per_step"]  # the trunk no longer runs per step

    # The next session reads every feature back: no shard is rewritten, and the result is the same again.
    before = _shards(tmp_path / "cache")
    run_session(base_model, stream[1], tmp_path / "again", tiny_params(), "sgm", runtime=Runtime(features=cache))
    assert _shards(tmp_path / "cache") == before and same_weights(tmp_path / "again", sgm_update[0])


def test_a_corrupt_shard_is_recomputed_and_changes_nothing(tmp_path, stream, base_model, sgm_update):
    run_session(base_model, stream[1], tmp_path / "first", tiny_params(), "sgm",
           runtime=Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100)))
    shard = sorted((tmp_path / "cache").glob("*/*.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x7f" * 8  # a float flipped in the last row
    shard.write_bytes(bytes(data))
    run_session(base_model, stream[1], tmp_path / "second", tiny_params(), "sgm",
           runtime=Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100)))
    assert same_weights(tmp_path / "second", sgm_update[0])
    assert not shard.exists() or shard.read_bytes() != bytes(data)

    index_path = shard.parent / "index.json"  # an index pointing outside its folder is not followed
    index = json.loads(index_path.read_text())
    index["shards"]["../../elsewhere.npy"] = {"sha256": "0", "bytes": 1}
    index_path.write_text(json.dumps(index))
    run_session(base_model, stream[1], tmp_path / "third", tiny_params(), "sgm",
           runtime=Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100)))
    assert same_weights(tmp_path / "third", sgm_update[0])
    assert "../../elsewhere.npy" not in json.loads(index_path.read_text())["shards"]


def test_a_shard_unchanged_since_it_was_written_or_checked_is_not_read_again_and_a_rewritten_one_is(
        tmp_path, stream, base_model, sgm_update, monkeypatch):
    """With the hash cache a version's start reads only the shards that changed since this cache wrote or last
    checked them, as the data files (pipeline/data/hashes.py); bad bytes written since are still found."""
    hashes = HashCache(tmp_path / "hashes.sqlite")

    def update(out: str) -> None:
        run_session(base_model, stream[1], tmp_path / out, tiny_params(), "sgm",
                    runtime=Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100, hashes=hashes)))

    read, sha256 = [], feature_cache.file_sha256
    monkeypatch.setattr(feature_cache, "file_sha256", lambda path: read.append(path) or sha256(path))
    update("first")  # writes the shards, remembering each as written
    shards = sorted((tmp_path / "cache").glob("*/*.npy"))
    update("second")
    assert shards and read == []
    past = time.time_ns() - 60 * 10**9
    for shard in shards:  # touched since: read once more, then remembered
        os.utime(shard, ns=(past, past))
    update("third")
    assert sorted(read) == shards
    read.clear()
    data = bytearray(shards[0].read_bytes())
    data[-8:] = b"\x7f" * 8
    shards[0].write_bytes(bytes(data))
    update("fourth")
    assert read == [shards[0]] and same_weights(tmp_path / "fourth", sgm_update[0])


def test_the_cache_stays_within_its_budget_and_keys_on_the_trunk(tmp_path, stream, base_model, sgm_update):
    tiny = FeatureCache(tmp_path / "cache", max_mb=1)  # smaller than one version's features
    run_session(base_model, stream[1], tmp_path / "small", tiny_params(), "sgm", runtime=Runtime(features=tiny))
    assert same_weights(tmp_path / "small", sgm_update[0])
    assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("*/*.npy")) <= 2**20

    model = build_classifier(tiny_params().model, 4, pretrained=False)
    keys = {Trunk.split(model, trainable_groups(model, groups), 32).key for groups in (1, 2)}
    assert len(keys) == 2  # a longer frozen part is another cache
    torch.nn.init.normal_(model.backbone.conv1[0].weight)
    assert Trunk.split(model, trainable_groups(model, 1), 32).key not in keys  # so are other trunk weights
    assert Trunk.split(model, trainable_groups(model, 0), 32) is None  # nothing frozen: nothing to cache


def test_the_index_is_json_and_shards_load_without_pickle(tmp_path, stream, base_model):
    run_session(base_model, stream[1], tmp_path / "m", tiny_params(), "vanilla",
           runtime=Runtime(features=FeatureCache(tmp_path / "cache", max_mb=100)))
    index = json.loads(next((tmp_path / "cache").glob("*/index.json")).read_text())
    assert index["shape"] == [32, 8, 8] and len(index["rows"]) == 4 * 60 + 2 * 80 + 6 * 40  # rehearsal + new + test
    import numpy as np

    for shard in (tmp_path / "cache").glob("*/*.npy"):
        assert np.load(shard, allow_pickle=False).dtype == np.float32


def test_lite0_splits_after_its_frozen_stages():
    params = load_params(None, ["model.pretrained=none"])
    model = build_classifier(params.model, 3, pretrained=False)
    trunk = Trunk.split(model, trainable_groups(model, params.model.frozen_groups), 64)
    assert trunk.skipped == ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2") and trunk.entry == "blocks.3"
