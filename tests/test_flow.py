"""The `update-model` Prefect flow on a real DVC repository: first version, up to date, update + promote,
refusal of a bad data version, a rejected candidate; artifacts in Prefect, the champion always intact."""

import json
import logging
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from flows.update_model import update_model
from pipeline.data import versions
from pipeline.model import update_card
from pipeline.registry import DiskStore, Registry, RegistryError
from tests.conftest import PASSING, REJECTED, tiny_params, weight_variant

pytestmark = pytest.mark.slow  # minutes each (`pytest -m "not slow"` skips them while developing)


def write_params(repo, *overrides):
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(*PASSING, *overrides).model_dump()))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, stream, base_model):
    """Built once: a DVC repo at v1 (with its remote) and a registry whose champion v0001 is the base model,
    recorded as trained on v1. Each test gets its own copy (`workspace`), so tests pass alone and in any order."""
    root = tmp_path_factory.mktemp("seeded")
    repo = root / "repo"
    versions.init_repo(repo, str(root / "remote"))  # the remote is shared: it only ever gains objects
    write_params(repo)
    shutil.copytree(stream[0], repo / "data")
    v1 = versions.add_and_push(repo, "data", "v1")
    champion = root / "champion"
    shutil.copytree(base_model, champion)
    update_card(champion, data_version=v1)
    registry = Registry(DiskStore(root / "models"), root / "cache")
    registry.promote(registry.register(champion), "the base model")
    return root


@pytest.fixture
def workspace(seeded, tmp_path, monkeypatch, request) -> tuple[Path, Registry]:
    """A fresh copy of the seeded repo and registry (`@pytest.mark.empty_registry`: no champion yet)."""
    shutil.copytree(seeded / "repo", tmp_path / "repo", symlinks=True)
    models = tmp_path / "models"
    if not request.node.get_closest_marker("empty_registry"):
        shutil.copytree(seeded / "models", models)
    monkeypatch.setenv("PIPELINE_REGISTRY_DIR", str(models))
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "repo", Registry(DiskStore(models), tmp_path / "cache")


def run(repo, **kwargs):
    state = update_model(workspace=str(repo), return_state=True, **kwargs)
    return state, state.result(raise_on_failure=False)


@pytest.mark.empty_registry
def test_flow_lifecycle(prefect_harness, workspace, stream):
    workspace, registry = workspace
    state, out = run(workspace)  # v1: no champion yet -> base model, promoted
    assert state.is_completed() and out["version"] == "v0001" and registry.resolve("champion") == "v0001"
    assert registry.info("champion")["data_version"] == versions.read_data_version(workspace / "data.dvc")

    state, out = run(workspace)  # same data version: ends quickly, trains nothing
    assert state.is_completed() and out["status"] == "up to date" and registry.versions() == ["v0001"]

    shutil.rmtree(workspace / "data")
    shutil.copytree(stream[1], workspace / "data")
    versions.add_and_push(workspace, "data", "v2")
    shutil.rmtree(workspace / "data")  # the flow pulls the version data.dvc records from the remote
    # the update served as it is: whether the gate resolves it below v0001 on 160 old test images (the drift rule, its
    # own test below) depends on the CPU's kernels, and v3 counts from v0001
    state, out = run(workspace, shadows=["vanilla"], consolidate_on_drift=False)
    assert state.is_completed(), state.message
    assert out["status"] == "promote" and registry.resolve("champion") == "v0002"
    assert out["metrics"]["sgm"]["kind"] == "class-incremental" and "vanilla (shadow)" in out["metrics"]
    card = registry.info("v0002")
    assert card["gate"]["decision"] == "promote" and card["class_names"][-2:] == ["coat", "sandal"]
    report = out["report"]
    assert "promote" in open(report).read() and (workspace / "work").exists()

    extra = workspace / "data" / "train" / "dress" / "extra-0.png"  # v3: data growth on top of the update v0002
    extra.write_bytes(sorted((workspace / "data" / "test" / "dress").iterdir())[0].read_bytes() + b"\0")
    versions.add_and_push(workspace, "data", "v3")
    # consolidation when asked: 481 training images, 50% more than the 320 of v0001, the chain's last retrain
    state, out = run(workspace, consolidate_after=1 / 3)
    assert state.is_completed(), state.message
    assert set(out["metrics"]) == {"retrain"} and registry.info(out["version"])["method"] == "retrain"
    assert "consolidation: 481 training images, 50% more than the 320" in open(out["report"]).read()
    reference = registry.info(out["version"])["gate"]["evidence"]["reference"]  # the chain's fixed reference
    assert reference["weights_sha256"] == registry.info("v0001")["files"]["model.safetensors"]
    assert registry.reference() is None  # the champion is a retrain now: the chain's new reference

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"update-model-report", "update-model-metrics"} <= keys


def test_an_update_behind_the_last_retrain_is_followed_by_the_retrain(prefect_harness, workspace, monkeypatch):
    """consolidate_on_drift (the default): an update the gate promotes but resolves below the last retrain-made model
    (the rule, pipeline.chain.behind_reference, is forced here; its own test is in test_chain.py) is followed by a
    retrain candidate, registered with its reason, gated and served in the update's place."""
    from pipeline import chain

    workspace, registry = workspace
    monkeypatch.setattr(chain, "behind_reference", lambda gate: "drift: forced by the test")
    extra = workspace / "data" / "train" / "dress" / "extra-0.png"  # data growth
    extra.write_bytes(sorted((workspace / "data" / "test" / "dress").iterdir())[0].read_bytes() + b"\0")
    versions.add_and_push(workspace, "data", "v2")
    state, out = run(workspace, method="sgm")
    assert state.is_completed(), state.message
    assert set(out["metrics"]) == {"sgm", "retrain (consolidation)"}
    assert [registry.info(v)["method"] for v in registry.versions()] == ["retrain", "sgm", "retrain"]
    assert registry.resolve("champion") == out["version"] == "v0003" and registry.reference() is None
    assert registry.info("v0003")["note"].endswith("(consolidation retrain)")
    assert out["gate"] == registry.info("v0003")["gate"] and "drift: forced by the test" in open(out["report"]).read()


def test_a_candidate_that_passed_its_gate_but_was_never_promoted_is_tried_again(tmp_path, base_model):
    """A run that ends between a promoted update's registration and its promotion (killed during the consolidation
    retrain after it) leaves a challenger that passed its gate: its data version is tried again, where a rejected
    challenger's is refused until forced."""
    from flows.update_model import _up_to_date

    verdicts = {}
    for decision in ("promote", "reject"):
        registry, model = Registry(DiskStore(tmp_path / decision), tmp_path / f"{decision}-cache"), tmp_path / decision
        shutil.copytree(base_model, model / "candidate")
        gate = {"decision": decision, "reasons": ["a check"], "checks": [],
                "evidence": {"champion": "0" * 64, "old_test_images": 0, "new_test_images": 0}}
        update_card(model / "candidate", data_version="d2", gate=gate)
        registry.set_alias("challenger", registry.register(model / "candidate", note=decision), decision)
        verdicts[decision] = _up_to_date(registry, "d2", force=False)
    assert verdicts["promote"] is None
    assert verdicts["reject"].is_failed() and "was rejected (a check)" in verdicts["reject"].message


def test_bad_data_version_is_refused_and_a_rejected_candidate_is_not_promoted(prefect_harness, workspace):
    workspace, registry = workspace
    champion = registry.resolve("champion")
    removed = sorted((workspace / "data" / "train" / "dress").iterdir())[0]
    kept = removed.read_bytes()
    removed.unlink()
    versions.add_and_push(workspace, "data", "a file removed")
    state, _ = run(workspace)
    assert state.is_failed() and "gone or changed" in str(state.result(raise_on_failure=False))
    assert registry.resolve("champion") == champion

    removed.write_bytes(kept)  # restore; add samples of a known class -> a data-growth update
    extra = workspace / "data" / "train" / "dress" / "extra-0.png"
    shutil.copy(sorted((workspace / "data" / "test" / "dress").iterdir())[0], extra)
    extra.write_bytes(extra.read_bytes() + b"\0")  # not byte-identical to the test image
    write_params(workspace, "gate.min_class_acc=100")  # a floor no model meets
    versions.add_and_push(workspace, "data", "v2 + one coat")
    state, out = run(workspace)
    assert state.is_failed() and out["status"] == "reject" and "class" in state.message
    assert registry.resolve("champion") == champion and registry.resolve("challenger") == out["version"]
    known = registry.versions()
    state, again = run(workspace)  # the rejected data version is not tried again...
    assert state.is_failed() and again["status"] == "rejected before" and again["version"] == out["version"]
    assert "force=True" in state.message and registry.versions() == known
    state, forced = run(workspace, force=True)  # ...unless forced: trained and judged again (deterministic: the
    assert forced["status"] == "reject" and forced["version"] == out["version"]  # same model, the same version)


def test_a_test_split_too_small_for_the_margin_fails_the_flow_before_training(prefect_harness, workspace):
    workspace, registry = workspace
    known = registry.versions()
    extra = workspace / "data" / "train" / "dress" / "extra-0.png"
    extra.write_bytes(sorted((workspace / "data" / "test" / "dress").iterdir())[0].read_bytes() + b"\0")
    write_params(workspace, "gate.old_acc_margin=0.5")  # 160 old-class test images cannot resolve half a point
    versions.add_and_push(workspace, "data", "v2 + one dress")
    state, _ = run(workspace)
    assert state.is_failed() and "old-class test images are needed" in str(state.result(raise_on_failure=False))
    assert registry.versions() == known and not list((workspace / "work").glob("*/candidate"))


def test_two_runs_for_the_same_data_version_update_once(prefect_harness, workspace):
    workspace, registry = workspace
    known = sorted(registry.versions())
    extra = workspace / "data" / "train" / "dress" / "extra-1.png"
    shutil.copy(sorted((workspace / "data" / "train" / "trouser").iterdir())[1], extra)
    extra.write_bytes(extra.read_bytes() + b"\1")  # new content, a known class: a data-growth update
    versions.add_and_push(workspace, "data", "one more dress")
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(run(workspace)[1])) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(o["status"] for o in outcomes)
    assert statuses == ["promote", "up to date"], [o.get("gate", {}).get("reasons") for o in outcomes if o.get("gate")]
    # the one run's candidates alone: the update, and the retrain too when the gate resolved the update below the
    # last retrain (consolidate_on_drift; whether it does on 320 images depends on the CPU's kernels)
    promoted = next(o for o in outcomes if o["status"] == "promote")
    assert set(promoted["metrics"]) in ({"sgm"}, {"sgm", "retrain (consolidation)"})
    assert len(registry.versions()) == len(known) + len(promoted["metrics"])
    promotions = [e for e in registry.history() if e["action"] == "promote" and e["version"] not in known]
    assert len(promotions) == 1


def test_flow_on_s3_keeps_credentials_out_of_every_output(prefect_harness, tmp_path, stream, bucket, s3_server,
                                                          monkeypatch):
    monkeypatch.setenv("PIPELINE_S3_BUCKET", bucket)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    versions.init_repo(repo, f"s3://{bucket}/dvc")
    versions.dvc(repo, "remote", "modify", "storage", "endpointurl", s3_server["AWS_ENDPOINT_URL_S3"])
    write_params(repo)
    shutil.copytree(stream[0], repo / "data")
    versions.add_and_push(repo, "data", "v1")
    prefect_logger = logging.getLogger("prefect")  # the suite runs Prefect at WARNING: search INFO logs as well
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)
    try:
        state, out = run(repo)
    finally:
        prefect_logger.setLevel(level)
    assert state.is_completed() and out["version"] == "v0001"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    from pipeline.registry.s3 import S3Store

    with get_client(sync_client=True) as client:
        artifacts = json.dumps([a.model_dump(mode="json") for a in client.read_artifacts()])
        logs = json.dumps([log.message for log in client.read_logs(LogFilter())])
        errors = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                                            level=LogFilterLevel(ge_=logging.ERROR)))
    assert not errors, [e.message[:300] for e in errors]  # a healthy S3 run logs no ERROR (alerting would fire)
    store = S3Store(bucket, "registry")
    written = b"".join(store.read(key) for key in store.list(""))
    written += b"".join(p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".dvc/cache" not in str(p))
    assert "v0001" in artifacts + logs and written  # the places searched are not empty
    assert "waiting for the 'update-model' concurrency slot" in logs  # the flow's INFO lines among them
    assert {key.rsplit("/", 1)[1] for key in store.list("reports/")} >= {"report.md", "metrics.json"}
    for secret in (s3_server["AWS_SECRET_ACCESS_KEY"], s3_server["AWS_ACCESS_KEY_ID"]):
        assert secret not in artifacts and secret not in logs and secret.encode() not in written


@pytest.fixture
def read_only(s3_server, bucket, monkeypatch):
    """A bucket and a credential that may read it but not write: an IAM user on moto's server, with IAM
    enforced for this test only."""
    import urllib.request

    import boto3

    endpoint = s3_server["AWS_ENDPOINT_URL_S3"]
    iam = boto3.client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]

    def enforce_after(requests: bytes) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=requests,
                                                      headers={"Content-Type": "text/plain"}))

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the credentials it first found
    enforce_after(b"0")
    try:
        yield bucket
    finally:
        enforce_after(b"inf")
        iam.delete_access_key(UserName="reader", AccessKeyId=key["AccessKeyId"])


@pytest.mark.parametrize("case", ["missing bucket", "read-only credential"])
def test_an_unusable_s3_registry_fails_the_flow_before_training(case, prefect_harness, tmp_path, stream, s3_server,
                                                                 request, monkeypatch):
    bucket = request.getfixturevalue("read_only") if case == "read-only credential" else "no-such-bucket"
    monkeypatch.setenv("PIPELINE_S3_BUCKET", bucket)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    versions.init_repo(repo, str(tmp_path / "remote"))
    write_params(repo)
    shutil.copytree(stream[0], repo / "data")
    versions.add_and_push(repo, "data", "v1")
    state, _ = run(repo)
    message = str(state.result(raise_on_failure=False))
    assert state.is_failed() and bucket in message, message
    if case == "read-only credential":
        assert "write check" in message and "AccessDenied" in message, message
    assert not (repo / "work").exists()  # nothing trained


def test_a_registry_disk_without_room_fails_the_flow_before_training(prefect_harness, workspace, stream,
                                                                     monkeypatch):
    workspace, registry = workspace
    shutil.rmtree(workspace / "data")
    shutil.copytree(stream[1], workspace / "data")
    versions.add_and_push(workspace, "data", "v2")
    monkeypatch.setenv("PIPELINE_MIN_FREE_MB", str(2**40))  # more room than any disk has
    state, _ = run(workspace)
    message = str(state.result(raise_on_failure=False))
    assert state.is_failed() and "MiB free, a new version needs about" in message, message
    assert not (workspace / "work").exists()  # nothing trained
    assert registry.versions() == ["v0001"] and registry.resolve("champion") == "v0001"


def test_a_rejected_version_is_promoted_only_by_force(workspace, base_model, tmp_path):
    _, registry = workspace
    candidate = weight_variant(base_model, tmp_path / "candidate", 1)
    update_card(candidate, gate=REJECTED)
    rejected = [registry.register(candidate)]
    with pytest.raises(RegistryError, match="rejected by the gate.*--force"):
        registry.promote(rejected[0])
    champion = registry.resolve("champion")
    assert registry.promote(rejected[0], "operator override", force=True)["version"] == rejected[0]
    assert "forced past a gate rejection" in registry.history()[-1]["reason"]
    registry.rollback()
    assert registry.resolve("champion") == champion
