"""The registry on disk and in a real S3 endpoint (moto's server on loopback): versions, aliases, history."""

import json
import shutil
import threading
import time

import pytest

from pipeline.cli import main
from pipeline.model import CheckpointError, load_model, update_card
from pipeline.registry import DiskStore, Registry, RegistryError
from pipeline.registry.s3 import S3Store
from pipeline.registry.store import StoreError
from tests.conftest import LENIENT, weight_variant


@pytest.fixture(params=["disk", "s3"])
def registry(request, tmp_path):
    if request.param == "disk":
        return Registry(DiskStore(tmp_path / "models"), tmp_path / "cache")
    return Registry(S3Store(request.getfixturevalue("bucket"), "team/registry"), tmp_path / "cache")


def test_versions_aliases_promote_rollback_and_history(registry, base_model, tmp_path):
    first = registry.register(base_model, note="base")
    second = registry.register(weight_variant(base_model, tmp_path / "other", 1), note="other weights")
    assert (first, second) == ("v0001", "v0002") and registry.versions() == ["v0001", "v0002"]
    with pytest.raises(RegistryError, match="no champion"):
        registry.resolve("champion")
    registry.promote(first, "base")
    registry.promote(second, "update")
    registry.set_alias("challenger", second)
    assert registry.resolve("champion") == second and registry.alias("champion")["previous"] == first
    model, card = load_model(registry.fetch("champion"))  # verified copy, loads
    assert card["class_names"] == ["dress", "pullover", "t-shirt_top", "trouser"]
    assert registry.rollback()["version"] == first
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    actions = [(e["action"], e["version"]) for e in registry.history()]
    assert actions == [("register", first), ("register", second), ("promote", first), ("promote", second),
                       ("alias", second), ("rollback", first)]
    status = registry.status()
    assert status["champion"]["version"] == first and status["versions"] == [first, second]


def test_an_upload_cut_short_is_not_a_version_and_its_number_is_never_reused(registry, base_model):
    registry.store.upload("versions/v0001/model.safetensors", base_model / "model.safetensors")  # no version.json
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="no version"):
        registry.fetch("v0001")
    assert registry.register(base_model) == "v0002"


def test_a_tampered_registered_file_is_refused_on_fetch(tmp_path, base_model):
    registry = Registry(DiskStore(tmp_path / "models"), tmp_path / "cache")
    version = registry.register(base_model)
    card = tmp_path / "models" / "versions" / version / "card.json"
    card.write_text(card.read_text().replace("trouser", "trousers"))
    with pytest.raises(CheckpointError, match="differs from the SHA-256 recorded"):
        registry.fetch(version)


def test_concurrent_registrations_get_distinct_versions(registry, base_model, tmp_path):
    models = [weight_variant(base_model, tmp_path / f"m{k}", k) for k in range(4)]
    names = []
    threads = [threading.Thread(target=lambda m=m: names.append(registry.register(m))) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(names) == ["v0001", "v0002", "v0003", "v0004"] == registry.versions()


def test_registering_the_same_model_again_gives_the_same_version(registry, base_model, tmp_path):
    """The flow retries `register`; a retry after a write that did succeed must not add a second version."""
    first = registry.register(base_model)
    copy = tmp_path / "copy"
    shutil.copytree(base_model, copy)  # the same weights and data version, another folder
    assert registry.register(base_model) == registry.register(copy) == first == "v0001"
    assert registry.versions() == ["v0001"]
    assert [e["action"] for e in registry.history()] == ["register"]


def test_a_tampered_version_json_cannot_write_outside_the_cache(bucket, base_model, tmp_path):
    registry = Registry(S3Store(bucket, "team"), tmp_path / "cache")
    version = registry.register(base_model)
    info = json.loads(registry.store.read(f"versions/{version}/version.json"))
    info["files"]["../../../escaped.txt"] = info["files"].pop("metrics.json")
    registry.store.write(f"versions/{version}/version.json", json.dumps(info).encode())
    with pytest.raises(RegistryError, match="tampered"):
        registry.fetch(version)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_two_runs_taking_over_an_expired_s3_lock_do_not_both_hold_it(bucket, tmp_path):
    store = S3Store(bucket, "team")
    stale = {"host": "gone", "pid": 1, "expires": 0}  # left by a killed run, long expired
    store.client.put_object(Bucket=bucket, Key="team/lock.json", Body=json.dumps(stale).encode())
    events, start = [], threading.Barrier(2)

    def contend(name):
        start.wait()
        with S3Store(bucket, "team").lock(timeout_s=30):
            events.append(("in", name))
            time.sleep(0.5)
            events.append(("out", name))

    threads = [threading.Thread(target=contend, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [kind for kind, _ in events] == ["in", "out", "in", "out"], events  # one at a time
    assert store.read("lock.json") is None  # each released only its own lock


def test_registry_keys_cannot_escape_the_folder(tmp_path):
    store = DiskStore(tmp_path / "models")
    for key in ["../x", "versions/../../x", "/etc/passwd", "versions/.hidden"]:
        with pytest.raises(StoreError, match="refusing registry key"):
            store.write(key, b"x")


def test_s3_credentials_never_reach_registry_objects_or_output(bucket, s3_server, base_model, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("PIPELINE_S3_BUCKET", bucket)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["register", str(base_model), "--alias", "champion", "--note", "base"]) == 0
    assert main(["status", "--json"]) == 0
    output = capsys.readouterr()
    assert "v0001" in output.out
    store = S3Store(bucket, "registry")
    objects = b"".join(store.read(key) for key in store.list(""))
    for secret in (s3_server["AWS_SECRET_ACCESS_KEY"], s3_server["AWS_ACCESS_KEY_ID"]):
        assert secret.encode() not in objects and secret not in output.out + output.err


def test_unreachable_s3_is_a_clear_error_after_retries(tmp_path, base_model, monkeypatch, s3_server):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard port: nothing listens
    registry = Registry(S3Store("models-bucket"), tmp_path / "cache")
    with pytest.raises(StoreError, match="after retries.*AWS_ENDPOINT_URL_S3"):
        registry.register(base_model)


def test_cli_register_promote_rollback_status(tmp_path, base_model, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_REGISTRY_DIR", str(tmp_path / "models"))
    copy = weight_variant(base_model, tmp_path / "copy", 1)
    assert main(["register", str(base_model), "--alias", "champion"]) == 0
    assert main(["register", str(copy)]) == 0
    assert main(["promote", "v0002", "--reason", "test"]) == 0
    assert main(["rollback"]) == 0
    assert main(["promote", "v0009"]) == 2
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "champion: v0001" in out and "rollback" in out
    alias = json.loads((tmp_path / "models" / "aliases" / "champion.json").read_text())
    assert alias == {**alias, "version": "v0001", "previous": "v0002"}
    assert main(["fetch", "@champion"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "models" / "versions" / "v0001")


def test_the_s3_preflight_probes_a_write_and_leaves_nothing(bucket, tmp_path):
    registry = Registry(S3Store(bucket, "team"), tmp_path / "cache")
    registry.preflight()  # a put and a delete under the prefix: a read-only credential fails here
    assert registry.store.client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    with pytest.raises(StoreError, match="write check"):
        Registry(S3Store("no-such-bucket", "team"), tmp_path / "cache").preflight()


def test_the_reference_is_the_last_champion_a_retrain_made(tmp_path, base_model, stream, monkeypatch, capsys):
    registry = Registry(DiskStore(tmp_path / "models"), tmp_path / "cache")
    assert registry.reference() is None
    first = registry.register(base_model)  # a first version (`train`)
    registry.promote(first)
    assert registry.reference() is None  # the champion is itself the reference
    updated = registry.register(_with_method(weight_variant(base_model, tmp_path / "u", 1), "sgm"))
    registry.promote(updated)
    assert registry.reference() == first
    retrained = registry.register(_with_method(weight_variant(base_model, tmp_path / "r", 2), "joint"))
    registry.promote(retrained)
    registry.promote(registry.register(_with_method(weight_variant(base_model, tmp_path / "u2", 3), "sgm")))
    assert registry.reference() == retrained
    registry.rollback()
    registry.rollback()
    assert registry.resolve("champion") == updated and registry.reference() == first
    monkeypatch.setenv("PIPELINE_REGISTRY_DIR", str(tmp_path / "models"))  # the CLI's @reference is the same
    out = tmp_path / "gate.json"
    assert main(["gate", "--candidate", "@champion", "--reference", "@reference", "--data", str(stream[0]),
                 "--output", str(out), *[arg for rule in LENIENT for arg in ("--set", rule)]]) == 0
    assert json.loads(out.read_text())["evidence"]["reference"]["weights_sha256"] == \
        registry.info(first)["files"]["model.safetensors"]


def _with_method(model_dir, method: str):
    update_card(model_dir, method=method)
    return model_dir
