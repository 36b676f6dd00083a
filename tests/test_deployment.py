"""The deployment against a real `prefect server start`: a manual run whose exit code CI uses, and the
dvc.data.updated event trigger, both into the same served `update-model` flow."""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.data import versions
from pipeline.registry import DiskStore, Registry
from tests.conftest import PASSING, tiny_params

pytestmark = pytest.mark.slow  # minutes each (`pytest -m "not slow"` skips them while developing)

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real `prefect server start` for the module (each test registers the deployment it needs)."""
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-server")), "PREFECT_API_URL": url,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    port = url.split(":")[2].split("/")[0]
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _healthy(url), 90, "prefect server start")
        yield env
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def workspace(server, tmp_path, stream) -> tuple[Path, dict, Registry]:
    """A DVC repo at v1, the environment a flow run sees, and the registry it writes."""
    repo = tmp_path / "repo"
    versions.init_repo(repo, str(tmp_path / "remote"))
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(*PASSING).model_dump()))
    shutil.copytree(stream[0], repo / "data")
    versions.add_and_push(repo, "data", "v1")
    env = {**server, "PIPELINE_REGISTRY_DIR": str(tmp_path / "models"), "PIPELINE_CACHE_DIR": str(tmp_path / "c")}
    return repo, env, Registry(DiskStore(tmp_path / "models"), tmp_path / "c")


def test_manual_run_exit_code_and_event_trigger(workspace, stream):
    repo, env, registry = workspace
    served = subprocess.Popen([sys.executable, "-m", "flows.deploy", "--workspace", str(repo)], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    prefect = [str(BIN / "prefect"), "deployment"]
    try:
        def inspect_deployment():
            done = subprocess.run([*prefect, "inspect", "update-model/dataset-growth"], env=env,
                                  capture_output=True, text=True)
            return done.stdout if done.returncode == 0 else None

        inspect = _wait(inspect_deployment, 90, "the deployment")
        assert "'cron': '0 3 * * *'" in inspect and "'collision_strategy': 'ENQUEUE'" in inspect

        manual = subprocess.run([*prefect, "run", "update-model/dataset-growth", "--watch", "--watch-timeout", "300"],
                                env=env, capture_output=True, text=True, timeout=330)
        assert manual.returncode == 0, manual.stdout + manual.stderr
        assert registry.resolve("champion") == "v0001"

        shutil.rmtree(repo / "data")
        shutil.copytree(stream[1], repo / "data")
        versions.add_and_push(repo, "data", "v2")
        subprocess.run([sys.executable, "-m", "flows.deploy", "--emit", "--workspace", str(repo)], env=env,
                       check=True, cwd=ROOT, capture_output=True)
        # v0002, the update; or v0003, the retrain after it when the gate resolved the update below v0001
        # (consolidate_on_drift: on 160 old test images, a matter of the CPU's kernels)
        _wait(lambda: registry.alias("champion")["version"] in ("v0002", "v0003"), 300,
              "the event-triggered run to promote its candidate")
    finally:
        served.terminate()
        served.wait(30)


def test_process_work_pool_deployment_runs_on_a_worker(workspace, tmp_path):
    repo, env, registry = workspace
    elsewhere = tmp_path / "elsewhere"  # the worker does not start in the checkout: the deployment says where
    elsewhere.mkdir()

    def run(*args, timeout=120, cwd=elsewhere):
        done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    run(str(BIN / "prefect"), "work-pool", "create", "updates", "--type", "process")
    run(sys.executable, "-m", "flows.deploy", "--pool", "updates", "--workspace", str(repo), cwd=ROOT)
    assert "'work_pool_name': 'updates'" in run(str(BIN / "prefect"), "deployment", "inspect",
                                                "update-model/dataset-growth")
    run(str(BIN / "prefect"), "deployment", "run", "update-model/dataset-growth")
    run(str(BIN / "prefect"), "worker", "start", "--pool", "updates", "--run-once", timeout=600)
    assert registry.resolve("champion") == "v0001"
    assert {key.rsplit("/", 1)[1] for key in registry.store.list("reports/")} >= {"report.md", "metrics.json"}

    # The kubernetes variant: registered against a real kubernetes-type pool, the image's installed module
    # as the entry point (nothing runs it here: no cluster, no Docker engine).
    run(str(BIN / "prefect"), "work-pool", "create", "updates-k8s", "--type", "kubernetes")
    run(sys.executable, "-m", "flows.deploy", "--pool", "updates-k8s", "--image", "registry.example/model-update:1",
        "--workspace", "/workspace", cwd=ROOT)
    inspect = run(str(BIN / "prefect"), "deployment", "inspect", "update-model/dataset-growth")
    assert "'work_pool_name': 'updates-k8s'" in inspect and "registry.example/model-update:1" in inspect
    assert "'entrypoint': 'flows.update_model.update_model'" in inspect


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_run_notifies_through_the_configured_block(workspace):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo, env, _ = workspace
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)  # a real webhook receiver on loopback
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    (repo / "params.yaml").write_text("update: {no_such_key: 1}\n")  # the run fails at once, before any work
    env = {**env, "PIPELINE_NOTIFY_BLOCK": "custom-webhook/ops", "PIPELINE_NOTIFY_STALE_DAYS": "3"}
    served = None
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        try:
            CustomWebhookNotificationBlock(name="ops", url=f"http://127.0.0.1:{hook.server_address[1]}/hook",
                                           json_data={"text": "{{subject}}|{{body}}"}).save("ops")
            served = subprocess.Popen([sys.executable, "-m", "flows.deploy", "--workspace", str(repo)], env=env,
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            def ours():  # beside the dvc.data.updated trigger, itself an automation
                return {a.name: a for a in client.read_automations() if "__automation_" not in a.name}

            found = _wait(lambda: len(ours()) == 2 and ours(), 90, "the two automations")
            stale = found["dataset-growth: no completed run for 3 days"].trigger
            assert stale.posture == "Proactive" and stale.within.days == 3
            assert stale.expect == {"prefect.flow-run.Completed"}
            run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "update-model/dataset-growth",
                                  "--watch", "--watch-timeout", "120"], env=env, capture_output=True, timeout=150)
            assert run.returncode == 1  # the flow run failed
            text = _wait(lambda: _Hook.received and _Hook.received[0]["text"], 120, "the notification")
            assert text.startswith("update-model/dataset-growth: run failed or rejected|") and "Failed" in text
            assert "no_such_key" in text  # the run's own error, for the person reading it
        finally:
            if served:
                served.terminate()
                served.wait(30)
            hook.shutdown()
