"""serving/ configs parse with TF Serving's protos; Dockerfile paths exist; compose parses; the server
binds 127.0.0.1 by default and loads only from configured base paths; CLI flags."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_advmi.serving import ModelEntry, ModelServer, config, registry
from tests import serving_fixtures as sf

ROOT = Path(__file__).resolve().parents[1]


def test_models_config_parses_with_tf_serving_proto():
    msg = text_format.Parse((ROOT / "serving/models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    cfgs = {c.name: c for c in msg.model_config_list.config}
    assert set(cfgs) == {"robust", "robust_pinned"}
    assert cfgs["robust"].model_version_policy.latest.num_versions == 1
    assert list(cfgs["robust_pinned"].model_version_policy.specific.versions) == [1]
    assert dict(cfgs["robust_pinned"].version_labels) == {"stable": 1}
    entries = registry.entries_from_config(msg)
    assert [(e.name, e.policy, e.policy_versions, e.labels) for e in entries] == [
        ("robust", "latest", (1,), {}), ("robust_pinned", "specific", (1,), {"stable": 1})]


def test_batching_and_monitoring_configs_parse():
    b = config.parse_batching(ROOT / "serving/batching.config")
    assert b == config.Batching(max_batch_size=64, batch_timeout_micros=2000, max_enqueued_batches=16,
                                num_batch_threads=2)
    # the message is TF Serving's: same full name and field numbers (wire-compatible)
    msg = text_format.Parse((ROOT / "serving/batching.config").read_text(), config.BatchingParameters())
    assert msg.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert msg.DESCRIPTOR.fields_by_name["num_batch_threads"].number == 4
    assert config.parse_monitoring(ROOT / "serving/monitoring.config") == "/monitoring/prometheus/metrics"
    with pytest.raises(text_format.ParseError):
        config.parse_batching("max_batch_size: 3")            # wrapper field: needs { value: 3 }
    with pytest.raises(ValueError, match="max_batch_size=0"):
        config.parse_batching("max_batch_size { value: 0 }")


def test_dockerfile_paths_exist_and_compose_parses():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM tensorflow/serving", text, re.M)
    assert "ARG MODEL_DIR" in text
    for src in re.findall(r"^COPY (\S+) ", text, re.M):
        if not src.startswith("$"):
            assert (ROOT / src).exists(), src
    compose = yaml.safe_load((ROOT / "serving/docker-compose.yml").read_text())
    svc = compose["services"]["tfserving"]
    assert svc["image"].startswith("tensorflow/serving")
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
    for vol in svc["volumes"]:
        src = vol.split(":")[0]
        if not src.startswith("../models"):
            assert (ROOT / "serving" / src).exists(), src
    assert any("--model_config_file=/models/models.config" == c for c in svc["command"])


def test_binds_localhost_by_default_and_only_configured_paths(tmp_path):
    sf.export_version(sf.small_model(0), tmp_path / "a" / "1")
    sf.export_version(sf.small_model(0), tmp_path / "secret" / "1")   # present on disk, not configured
    server = ModelServer([ModelEntry("a", tmp_path / "a")], rest_port=0, grpc_port=0, poll_seconds=0).start()
    try:
        assert server.host == "127.0.0.1"
        assert server._runner.addresses[0][0] == "127.0.0.1"
        url = server.rest_url
        assert requests.get(url + "/v1/models/a").status_code == 200
        for name in ("secret", "a/../secret", "..%2Fsecret"):
            r = requests.get(url + f"/v1/models/{name}")
            assert r.status_code in (400, 404) and "error" in r.json()
    finally:
        server.stop()
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match="invalid model name"):
            ModelEntry(bad, tmp_path)


def test_cli_serve_and_query(tmp_path):
    sf.export_version(sf.small_model(0), tmp_path / "digits" / "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "keras_advmi.cli", "serve", "--model_name", "digits", "--model_base_path",
           str(tmp_path / "digits"), "--rest_api_port", "0", "--port", "0", "--enable_batching",
           "--batching_parameters_file", str(ROOT / "serving/batching.config")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"REST on (http://127\.0\.0\.1:\d+)\s+gRPC on (127\.0\.0\.1:\d+)", line)
        assert m, line
        np.save(tmp_path / "x.npy", sf.images(2))
        for url, proto in ((m[1], "rest"), (m[2], "grpc")):
            out = subprocess.run([sys.executable, "-m", "keras_advmi.cli", "query", "digits", "--url", url,
                                  "--protocol", proto, "--images", str(tmp_path / "x.npy"), "--action", "detect"],
                                 env=env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr[-500:]
            assert '"is_adversarial"' in out.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run([sys.executable, "-m", "keras_advmi.cli", "serve", "--model_base_path", "/nonexistent"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
