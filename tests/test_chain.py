"""The chain's policy: consolidation once the data grew by a set share since the chain's last retrain or on the
gate's evidence of drift, the fallback, the champion and the reference; one rule that the flow and the production
benchmark both run."""

from argparse import Namespace
from pathlib import Path

import pytest

from pipeline.chain import CONSOLIDATE_AFTER, FALLBACK, Chain, behind_reference, consolidation_due, run_version
from pipeline.data import Manifest
from tests.conftest import LENIENT, flow_repo_at_v2, tiny_params

THIRD = 1 / 3


def version(n_train: int) -> Manifest:
    train = {f"train/c{i % 3}/{i}.png": (f"c{i % 3}", f"{i:064x}") for i in range(n_train)}
    return Manifest({"train": train, "test": {"test/c0/0.png": ("c0", "f" * 64)}})


def test_a_chain_consolidates_once_the_data_grew_by_the_share_since_its_last_retrain():
    retrained_on = version(300)
    assert consolidation_due(retrained_on, version(399), THIRD) is None  # +33.0%: not yet a third
    due = consolidation_due(retrained_on, version(400), THIRD)
    assert due == "consolidation: 400 training images, 33% more than the 300 the last retrain saw " \
                  "(consolidate_after 33%)"
    assert consolidation_due(retrained_on, version(3000), CONSOLIDATE_AFTER) is None  # the default: never
    assert consolidation_due(retrained_on, version(303), 0.01) is not None


def test_the_chain_moves_its_champion_and_reference_as_the_gate_decides(tmp_path):
    """The policy alone, on labelled folders: a rejected update falls back to a retrain; a promoted update keeps the
    reference (the last retrain-made champion); a promoted retrain becomes it; a rejected fallback keeps the chain."""
    trained, verdicts = [], []

    def train(method: str, attempt: str) -> tuple[Path, dict]:
        trained.append((method, attempt))
        return tmp_path / f"{len(trained)}-{method}", {"method": "sgm" if method == "auto" else method}

    def judge(candidate: Path, metrics: dict, reference: Path | None) -> dict:  # no drop resolved: no consolidation
        return {"decision": verdicts.pop(0), "reference": reference,
                "evidence": {"old_acc_drop": 0.0, "old_acc_drop_bound": 0.4}}

    base = Chain(tmp_path / "base", None, version(300))
    verdicts[:] = ["promote"]
    updated = run_version(base, version(303), train, judge)
    assert trained == [("auto", "update")] and updated.chain == Chain(updated.attempts[0].candidate, base.champion,
                                                                       base.retrained_on)
    verdicts[:] = ["reject", "promote"]
    fell_back = run_version(updated.chain, version(306), train, judge)
    assert [a.kind for a in fell_back.attempts] == ["update", "fallback"] and trained[-1] == (FALLBACK, "fallback")
    assert fell_back.attempts[0].gate["reference"] == base.champion  # judged against the reference too
    assert fell_back.chain == Chain(fell_back.attempts[1].candidate, None, version(306))  # the new reference
    verdicts[:] = ["reject", "reject"]
    kept = run_version(fell_back.chain, version(309), train, judge)
    assert [a.kind for a in kept.attempts] == ["update", "fallback"]
    assert kept.promoted is None and kept.chain == fell_back.chain
    verdicts[:] = ["reject"]  # without the fallback, or when the rejected candidate is a retrain: no second one
    assert len(run_version(kept.chain, version(309), train, judge, fallback=False).attempts) == 1
    verdicts[:] = ["reject"]
    assert len(run_version(kept.chain, version(309), train, judge, method="retrain").attempts) == 1
    verdicts[:] = ["promote"]
    due = run_version(fell_back.chain, version(410), train, judge, consolidate_after=THIRD)
    assert trained[-1] == ("retrain", "update") and due.consolidation.startswith("consolidation: 410")


def gate(decision: str, drop: float, bound: float, reference: bool = True) -> dict:
    """A gate's result as the policy reads it: the paired drop and its bound against the last retrain-made model."""
    against = {"old_acc_drop": drop, "old_acc_drop_bound": bound}
    evidence = {"old_acc_drop": 0.0, "old_acc_drop_bound": 0.4, **({"reference": against} if reference else against)}
    return {"decision": decision, "evidence": evidence}


def test_an_update_the_gate_resolves_below_the_last_retrain_is_followed_by_the_retrain(tmp_path):
    """Drift: a promoted update whose paired drop against the last retrain-made model is resolved (the bound less
    than twice the drop) is followed by the retrain, served when the gate promotes it; a rejected retrain leaves the
    update served. On by default (`on_drift=False` serves the update), and an unresolved drop is no drift."""
    assert behind_reference(gate("promote", 0.6, 1.0)).startswith("drift: 0.60 points below the last retrain-made")
    assert behind_reference(gate("promote", 0.4, 0.9)) is None  # 0.4 below, but within the test split's noise
    assert behind_reference(gate("promote", 0.6, 1.0, reference=False)) is not None  # the champion is that retrain
    assert behind_reference(gate("promote", -0.3, 0.2)) is None and behind_reference(None) is None
    trained, verdicts = [], []

    def train(method: str, attempt: str) -> tuple[Path, dict]:
        trained.append((method, attempt))
        return tmp_path / f"{len(trained)}-{method}", {"method": "sgm" if method == "auto" else method}

    def judge(candidate: Path, metrics: dict, reference: Path | None) -> dict:
        return verdicts.pop(0)

    chain = Chain(tmp_path / "update", tmp_path / "retrain", version(300))
    verdicts[:] = [gate("promote", 0.6, 1.0)]
    assert len(run_version(chain, version(303), train, judge, on_drift=False).attempts) == 1  # the update served
    verdicts[:] = [gate("promote", 0.6, 1.0), gate("promote", -0.8, -0.4)]
    drifted = run_version(chain, version(303), train, judge)  # the default
    assert [a.kind for a in drifted.attempts] == ["update", "consolidation"]
    assert trained[-1] == ("retrain", "consolidation")  # whatever the fallback is: the chain's retrain
    assert drifted.promoted is drifted.attempts[1] and drifted.consolidation.startswith("drift: 0.60")
    assert drifted.chain == Chain(drifted.attempts[1].candidate, None, version(303))  # the new reference
    verdicts[:] = [gate("promote", 0.6, 1.0), gate("reject", 0.0, 2.5)]
    kept = run_version(chain, version(303), train, judge)
    assert kept.promoted is kept.attempts[0] and kept.chain == Chain(kept.attempts[0].candidate, chain.reference,
                                                                     chain.retrained_on)
    verdicts[:] = [gate("promote", 0.4, 0.9)]
    assert len(run_version(chain, version(303), train, judge).attempts) == 1
    verdicts[:] = [gate("promote", 0.6, 1.0)]  # a retrain below the reference is no drift: nothing to consolidate
    retrained = run_version(chain, version(303), train, judge, method="retrain")
    assert len(retrained.attempts) == 1 and retrained.consolidation is None


@pytest.mark.slow  # a whole flow (two versions) and the benchmark's version
def test_a_rule_changed_in_the_policy_is_what_the_flow_and_the_benchmark_run(prefect_harness, tmp_path, stream,
                                                                           base_model, monkeypatch):
    """The fallback changed in pipeline/chain.py alone (vanilla rehearsal instead of the retrain): the flow and the
    production benchmark both train it after a rejected update, with no copy of the rule to change beside it."""
    from benchmarks.production import chain_version
    from flows.update_model import update_model
    from pipeline import chain as policy
    from pipeline.data import build_manifest
    from pipeline.registry import DiskStore, Registry
    from pipeline.runtime import Runtime

    monkeypatch.setattr(policy, "FALLBACK", "vanilla")
    rejected = ["update.method=sgm", "update.max_iters=1", "update.min_iters=1"]  # one step learns no new class
    params = tiny_params(*LENIENT, *rejected)
    row = {"chain": []}
    outcome = chain_version(Chain(base_model, None, build_manifest(stream[0])), "v2", stream[1],
                            build_manifest(stream[1]), tmp_path / "bench", tmp_path / "bench", params, Runtime(), row,
                            Namespace(consolidate_after=None, consolidate_on_drift=False))
    assert [a.metrics["method"] for a in outcome.attempts] == ["sgm", "vanilla"]
    assert [c["method"] for c in row["chain"]] == ["sgm", "vanilla"]

    repo = flow_repo_at_v2(tmp_path, stream, params, monkeypatch)
    out = update_model(workspace=str(repo), return_state=True).result(raise_on_failure=False)
    assert set(out["metrics"]) == {"sgm", "vanilla (fallback)"}
    registry = Registry(DiskStore(tmp_path / "models"), tmp_path / "cache")
    assert [registry.info(v)["method"] for v in registry.versions()] == ["retrain", "sgm", "vanilla"]
