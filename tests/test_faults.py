"""Fault injection: SIGKILL at failpoints (PIPELINE_CRASH_AT) during an update, a checkpoint write, a gate, a
registration and alias moves; S3 failing mid-upload; an unwritable or full registry. After each: the champion
loads and verifies, every earlier version is listed, and the next run completes."""

import json
import os
import signal
import subprocess
import sys

import pytest

from pipeline.model import load_card, load_model
from pipeline.registry import DiskStore, Registry
from pipeline.registry.s3 import S3Store
from pipeline.registry.store import StoreError
from tests.conftest import TINY, weight_variant

VOLATILE = {"wall_s", "train_s", "eval_s", "stages_s", "peak_rss_mb"}
TINY_ARGS = [f"--set={s}" for s in TINY]


def cli(*args, crash: str | None = None, env: dict) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "PIPELINE_CRASH_AT": crash or ""}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=full_env, capture_output=True,
                          text=True, timeout=300)


def assert_killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr


@pytest.fixture
def setup(tmp_path, base_model):
    env = {"PIPELINE_REGISTRY_DIR": str(tmp_path / "models"), "PIPELINE_CACHE_DIR": str(tmp_path / "cache")}
    registry = Registry(DiskStore(tmp_path / "models"), tmp_path / "cache")
    registry.promote(registry.register(base_model), "base")
    return registry, env


def assert_intact(registry: Registry, versions: list[str], champion: str) -> None:
    assert registry.resolve("champion") == champion
    load_model(registry.fetch("champion"))  # verified against version.json and the card's SHA-256
    assert set(versions) <= set(registry.versions())


def test_killed_update_leaves_nothing_and_a_rerun_matches_an_uninterrupted_run(setup, tmp_path, stream):
    registry, env = setup
    data = str(stream[1])
    reference = cli("update", "--parent", "@champion", "--data", data, "--out", str(tmp_path / "ref"), *TINY_ARGS,
                    env=env)
    assert reference.returncode == 0, reference.stderr
    for point in ("train:step5", "checkpoint:staged"):  # mid-training, mid-checkpoint-write
        out = tmp_path / "candidate"
        assert_killed(cli("update", "--parent", "@champion", "--data", data, "--out", str(out), *TINY_ARGS,
                          crash=point, env=env))
        assert not out.exists()  # no half-written model under the final name
        assert_intact(registry, ["v0001"], "v0001")
    rerun = cli("update", "--parent", "@champion", "--data", data, "--out", str(tmp_path / "candidate"), *TINY_ARGS,
                env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(tmp_path.glob(".candidate.*"))  # the killed write's staging folder, removed by the rerun
    ref, again = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ref", "candidate"))
    assert {k: v for k, v in ref.items() if k not in VOLATILE} == {k: v for k, v in again.items() if k not in VOLATILE}


def test_killed_gate_registration_and_alias_moves_keep_the_registry_whole(setup, tmp_path, stream, base_model):
    registry, env = setup
    candidate = weight_variant(base_model, tmp_path / "candidate", 1)
    card_before = load_card(candidate)
    gate = ["gate", "--candidate", str(candidate), "--champion", "@champion", "--data", str(stream[0]), *TINY_ARGS]
    assert_killed(cli(*gate, crash="card:staged", env=env))
    assert load_card(candidate) == card_before  # the old card, whole
    load_model(candidate)
    assert [p.name for p in candidate.iterdir() if p.name.startswith(".card.json.")]  # the killed write's temporary
    rerun = cli(*gate, "--output", str(tmp_path / "gate.json"), env=env)
    assert rerun.returncode in (0, 1), rerun.stderr  # judged again: a decision, not an error
    result = json.loads((tmp_path / "gate.json").read_text())
    assert load_card(candidate)["gate"] == result and (rerun.returncode == 0) == (result["decision"] == "promote")
    assert not [p for p in candidate.iterdir() if p.name.startswith(".")]  # cleaned by the rerun

    assert_killed(cli("register", str(candidate), crash="registry:uploaded", env=env))
    assert registry.versions() == ["v0001"]  # files without version.json are not a version
    assert cli("register", str(candidate), env=env).returncode == 0
    assert registry.versions() == ["v0001", "v0003"]  # the number of a cut-short upload is not reused

    assert_killed(cli("promote", "v0003", crash="store:staged", env=env))  # mid-alias-move
    assert_intact(registry, ["v0001", "v0003"], "v0001")
    assert cli("promote", "v0003", env=env).returncode == 0
    assert_killed(cli("rollback", crash="store:staged", env=env))
    assert_intact(registry, ["v0001", "v0003"], "v0003")
    assert cli("rollback", env=env).returncode == 0
    assert_intact(registry, ["v0001", "v0003"], "v0001")
    info = registry.info("v0003")  # a complete version holds exactly its files; no temporaries anywhere
    assert sorted(p.name for p in (tmp_path / "models" / "versions" / "v0003").iterdir()) == \
        sorted([*info["files"], "version.json"])
    assert [p.name for p in (tmp_path / "models").rglob(".*")] == [".lock"]


def _moto(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer("127.0.0.1", port=0, verbose=False)  # in-process backend: state outlives it
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    return server


def test_s3_going_away_mid_upload_retries_then_fails_clearly_and_the_champion_stays(bucket, base_model, tmp_path,
                                                                                    monkeypatch):
    first = _moto(monkeypatch)
    registry = Registry(S3Store(bucket), tmp_path / "cache")
    registry.promote(registry.register(base_model), "base")
    upload, uploaded = registry.store.upload, []

    def upload_then_outage(key, path):  # the endpoint disappears after the first file of the new version
        upload(key, path)
        uploaded.append(key)
        first.stop()

    registry.store.upload = upload_then_outage
    attempts = []  # every HTTP request botocore sends, retries included
    registry.store.client.meta.events.register("before-send.s3", lambda **kwargs: attempts.append(1))
    with pytest.raises(StoreError, match="after retries"):
        registry.register(weight_variant(base_model, tmp_path / "next", 1))
    assert len(uploaded) == 1 and len(attempts) >= 5  # retried (5 attempts per request), not given up at once

    _moto(monkeypatch)  # the endpoint is back (same objects)
    registry = Registry(S3Store(bucket), tmp_path / "cache2")
    assert registry.versions() == ["v0001"] and registry.resolve("champion") == "v0001"
    load_model(registry.fetch("champion"))
    held = json.loads(registry.store.read("lock.json"))  # the failed run could not release its lock:
    assert held["pid"] == os.getpid()  # a later run waits until it expires, or an operator deletes it
    registry.store.client.delete_object(Bucket=bucket, Key="lock.json")
    assert registry.register(weight_variant(base_model, tmp_path / "later", 2)) == "v0003"


def test_an_unwritable_or_full_registry_is_refused_by_its_preflight(tmp_path, base_model):
    """The check the flow runs before it trains; that the flow stops there, nothing trained, is proven through the
    flow in test_flow.py (a disk registry without room, an unusable S3 bucket)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not writable"):
        Registry(DiskStore(blocker / "models"), tmp_path / "cache").preflight()
    with pytest.raises(StoreError, match="MiB free"):
        Registry(DiskStore(tmp_path / "models"), tmp_path / "cache", min_free_mb=2**40).preflight()
