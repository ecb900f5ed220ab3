"""The sweep RayJob: built from the template, submitted through the Kubernetes API, judged by
status.jobStatus (a retried attempt is not a verdict)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from clear_core.errors import ConfigError
from pipeline.deploy import manifests, rayjob
from pipeline.deploy.rayjob import RayJobFailed, RayJobStatus, wait_for_rayjob

REPO = Path(__file__).resolve().parents[3]


def schema_dir() -> Path:
    env = os.environ.get("CLEARREC_KUBERAY_SCHEMAS")
    if env:
        return Path(env)
    return Path(os.environ.get("CLEARREC_SHARED", REPO.parent / "shared")) / "schemas" / "kuberay"


def built(**kw):
    args = dict(name="clearrec-sweep-abc", namespace="ml", cpu_image="reg/clearrec:cpu",
                gpu_image="reg/clearrec:cuda", config_map_name="clearrec-sweep-abc-config")
    args.update(kw)
    return rayjob.build_rayjob(rayjob.load_template(), **args)


# --------------------------------------------------------------------------- building


def test_build_sets_images_name_and_mounts_the_config_on_the_head():
    template = rayjob.load_template()
    original = copy.deepcopy(template)
    job = rayjob.build_rayjob(template, name="n1", namespace="ml", cpu_image="c", gpu_image="g",
                              config_map_name="n1-config", backoff_limit=3)
    assert template == original  # the template is not modified
    assert job["metadata"] == {**original["metadata"], "name": "n1", "namespace": "ml"}
    spec = job["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["entrypoint"] == f"clearrec sweep --config {rayjob.CONFIG_MOUNT}/{rayjob.CONFIG_KEY}"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["image"] == "c"
    assert spec["submitterPodTemplate"]["spec"]["containers"][0]["image"] == "c"
    assert [g["template"]["spec"]["containers"][0]["image"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]] == ["g"]
    assert {"name": "sweep-config", "configMap": {"name": "n1-config"}} in head["volumes"]
    assert original["spec"]["entrypoint"] == spec["entrypoint"]  # the template and launcher agree
    mounts = head["containers"][0]["volumeMounts"]
    assert {"name": "sweep-config", "mountPath": rayjob.CONFIG_MOUNT, "readOnly": True} in mounts


def test_a_template_without_the_config_volume_is_refused():
    template = rayjob.load_template()
    head = template["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["volumes"] = [v for v in head["volumes"] if v["name"] != "sweep-config"]
    with pytest.raises(ConfigError, match="sweep-config"):
        rayjob.build_rayjob(template, name="n", namespace=None, cpu_image="c", gpu_image="g", config_map_name="m")


def test_built_rayjob_is_still_a_valid_manifest():
    job = built()
    assert manifests.validate_pod_templates(job) == []
    if manifests.CrdSchemas.available(schema_dir()):
        assert manifests.CrdSchemas(schema_dir()).errors(job) == []


@pytest.mark.parametrize("text", ["3f2a9c1e-7b4d-4e0a-9a51-0c2d7e8f9a10", "My Sweep_v2!!", "", "x" * 200])
def test_job_names_are_short_dns_labels(text):
    name = rayjob.job_name(text)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) and len(name) <= rayjob.NAME_MAX
    assert name.startswith("clearrec-sweep")


def test_same_run_id_gives_the_same_name_so_a_retried_step_finds_its_job():
    run = "3f2a9c1e-7b4d-4e0a-9a51-0c2d7e8f9a10"
    assert rayjob.job_name(run) == rayjob.job_name(run) != rayjob.job_name(run.replace("3f", "4f"))


def test_run_config_replaces_the_dataset_and_points_results_at_s3():
    config = {"name": "s", "dataset": {"synthetic": True, "raw": True}, "storage": {"path": "runs/x", "endpoint_url": "http://minio:9000"}}
    out = rayjob.sweep_config_for_run(config, dataset_path="/data/runs/r/dataset", results_uri="s3://b/sweeps/r")
    assert out["dataset"] == {"path": "/data/runs/r/dataset"}
    assert out["storage"] == {"path": "s3://b/sweeps/r", "endpoint_url": "http://minio:9000"}
    assert config["dataset"] == {"synthetic": True, "raw": True}  # input untouched
    with pytest.raises(ConfigError, match="s3://"):
        rayjob.sweep_config_for_run(config, results_uri="/local/folder")


def test_the_entrypoint_is_a_clearrec_sweep_command_line_that_parses():
    from pipeline.cli import build_parser

    for runs_dir in (None, "/data/runs/r 1/sweep-runs"):
        job = built(runs_dir=runs_dir)
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[0] == "clearrec"
        args = build_parser().parse_args(argv[1:])
        assert args.command == "sweep" and args.config.endswith("sweep.yaml")
        assert args.runs_dir == runs_dir


# --------------------------------------------------------------------------- waiting on status


def statuses(*pairs):
    return iter([{"status": {"jobStatus": j, "jobDeploymentStatus": d}} for j, d in pairs])


def wait(seq, timeout_s=100.0):
    clock = [0.0]
    seen = []
    result = wait_for_rayjob(lambda: next(seq), timeout_s=timeout_s, poll_s=1.0, on_change=seen.append,
                             clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    return result, seen


def test_succeeds_only_on_job_status_succeeded():
    result, seen = wait(statuses(("", "Initializing"), ("PENDING", "Running"), ("RUNNING", "Running"),
                                 ("RUNNING", "Running"), ("SUCCEEDED", "Complete")))
    assert result.succeeded
    assert [s.job_status for s in seen] == ["", "PENDING", "RUNNING", "SUCCEEDED"]  # changes only


def test_a_failed_attempt_that_kuberay_retries_is_not_the_verdict():
    result, _ = wait(statuses(("RUNNING", "Running"), ("FAILED", "Retrying"), ("", "New"),
                              ("RUNNING", "Running"), ("SUCCEEDED", "Complete")))
    assert result.succeeded


@pytest.mark.parametrize("final", [("FAILED", "Complete"), ("FAILED", "Failed"), ("STOPPED", "Complete"), ("", "Failed")])
def test_failed_job_raises_with_both_statuses(final):
    with pytest.raises(RayJobFailed, match=f"jobDeploymentStatus={final[1]}"):
        wait(statuses(("RUNNING", "Running"), final))


def test_a_job_that_never_finishes_times_out():
    forever = iter(lambda: {"status": {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}}, None)
    with pytest.raises(RayJobFailed, match="not finished after 5 s"):
        wait(forever, timeout_s=5.0)


def test_status_of_a_fresh_object_without_status():
    status = RayJobStatus.of({"metadata": {"name": "x"}})
    assert not status.succeeded and not status.failed


# --------------------------------------------------------------------------- against an API server


class FakeKubeAPI:
    """A loopback HTTP server speaking the few Kubernetes API calls the launcher makes; each GET of
    a RayJob returns the next status of ``script`` (then stays on the last)."""

    def __init__(self, script):
        self.script = list(script)
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.gets = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_POST(self):
                api.requests.append(("POST", self.path))
                body = self._body()
                key = f"{self.path}/{body['metadata']['name']}"
                if key in api.objects:
                    return self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
                body.setdefault("metadata", {})["uid"] = f"uid-{len(api.objects)}"
                api.objects[key] = body
                self._send(201, body)

            def do_PATCH(self):
                api.requests.append(("PATCH", self.path))
                if self.path not in api.objects:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                patch = self._body()
                api.objects[self.path]["metadata"].update(patch["metadata"])
                self._send(200, api.objects[self.path])

            def do_PUT(self):
                api.requests.append(("PUT", self.path))
                api.objects[self.path] = self._body()
                self._send(200, api.objects[self.path])

            def do_GET(self):
                api.requests.append(("GET", self.path))
                if self.path not in api.objects:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                obj = dict(api.objects[self.path])
                if "/rayjobs/" in self.path:
                    job, deployment = api.script[min(api.gets, len(api.script) - 1)]
                    api.gets += 1
                    obj["status"] = {"jobStatus": job, "jobDeploymentStatus": deployment}
                self._send(200, obj)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    pytest.importorskip("kubernetes", reason="the Kubernetes client is in the optional `kfp` extra")

    def write(url: str) -> Path:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "ml"}}],
        }))
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        return path

    return write


def submit_args(tmp_path, *extra):
    config = tmp_path / "sweep.yaml"
    config.write_text("name: cluster-sweep\nnum_samples: 4\n")
    return ["submit", "--config", str(config), "--cpu-image", "reg/c:cpu", "--gpu-image", "reg/c:cuda",
            "--dataset-path", "/data/runs/r1/dataset", "--results", "s3://clearrec/sweeps/r1",
            "--run-id", "r1", "--poll", "0.01", "--timeout", "30", *extra]


def test_submit_creates_config_and_rayjob_then_waits_for_success(tmp_path, kubeconfig):
    with FakeKubeAPI([("", "Initializing"), ("RUNNING", "Running"), ("SUCCEEDED", "Complete")]) as api:
        kubeconfig(api.url)
        assert rayjob.main(submit_args(tmp_path)) == 0
    cm = api.objects["/api/v1/namespaces/ml/configmaps/clearrec-sweep-r1-config"]
    assert yaml.safe_load(cm["data"]["sweep.yaml"]) == {
        "name": "cluster-sweep", "num_samples": 4, "dataset": {"path": "/data/runs/r1/dataset"},
        "storage": {"path": "s3://clearrec/sweeps/r1"},
    }
    job = api.objects["/apis/ray.io/v1/namespaces/ml/rayjobs/clearrec-sweep-r1"]
    assert job["metadata"]["namespace"] == "ml"
    # the RayJob owns the ConfigMap, so Kubernetes deletes it with the job
    assert cm["metadata"]["ownerReferences"] == [
        {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "clearrec-sweep-r1", "uid": job["metadata"]["uid"]}
    ]
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] == "reg/c:cuda"
    assert api.gets == 3  # it kept polling until SUCCEEDED


def test_submit_exits_non_zero_when_the_rayjob_fails(tmp_path, kubeconfig, capsys):
    with FakeKubeAPI([("RUNNING", "Running"), ("FAILED", "Failed")]) as api:
        kubeconfig(api.url)
        assert rayjob.main(submit_args(tmp_path)) == 2
    assert "jobStatus=FAILED" in capsys.readouterr().err


def test_a_retried_step_follows_the_existing_rayjob_instead_of_starting_another(tmp_path, kubeconfig):
    with FakeKubeAPI([("SUCCEEDED", "Complete")]) as api:
        kubeconfig(api.url)
        assert rayjob.main(submit_args(tmp_path)) == 0
        assert rayjob.main(submit_args(tmp_path)) == 0
    posts = [p for m, p in api.requests if m == "POST" and "rayjobs" in p]
    assert len(posts) == 2 and len([k for k in api.objects if "/rayjobs/" in k]) == 1
    assert ("PUT", "/api/v1/namespaces/ml/configmaps/clearrec-sweep-r1-config") in api.requests


def test_submit_without_a_cluster_fails_clearly(tmp_path, kubeconfig, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert rayjob.main(submit_args(tmp_path)) == 2
    assert "no Kubernetes cluster" in capsys.readouterr().err
