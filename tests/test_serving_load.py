"""Overload answers 503 fast and loses no request; hot swap under load fails nothing; `specific`
keeps the pinned version."""

import concurrent.futures
import threading
import time

import numpy as np
import requests

from keras_advmi.serving import Batching, Client, ModelEntry, ModelServer, ServingClientError
from tests import serving_fixtures as sf

CALL_S = 1.0     # a slowed model call, in seconds


def test_overload_503_fast_and_every_request_answered(tmp_path):
    sf.export_version(sf.small_model(0), tmp_path / "m" / "1")
    # queue holds 2 batches of 1 row; one worker; each model call slowed to CALL_S
    server = ModelServer([ModelEntry("m", tmp_path / "m")], Batching(1, 0, 2, 1), rest_port=0, grpc_port=None,
                         poll_seconds=0).start()
    try:
        servable = server.registry.resolve("m")
        run = servable.run

        def slow(*a, **k):
            time.sleep(CALL_S)
            return run(*a, **k)
        servable.run = slow
        body = {"instances": sf.images(1).tolist()}

        def call(_):
            t0 = time.perf_counter()
            r = requests.post(server.rest_url + "/v1/models/m:predict", json=body, timeout=30)
            return r.status_code, time.perf_counter() - t0, r.json()

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(call, range(12)))
        codes = [c for c, _, _ in results]
        assert len(results) == 12 and set(codes) <= {200, 503}
        assert codes.count(200) >= 2 and codes.count(503) >= 6, codes
        fast = [t for c, t, _ in results if c == 503]
        # refused at once: a request parked behind the queue would wait at least one model call (CALL_S);
        # the margin is for a loaded 2-core CI box, where parsing the body alone took up to 0.15 s
        assert max(fast) < CALL_S / 2, fast
        assert all("queue" in j["error"] for c, _, j in results if c == 503)
        assert all("predictions" in j for c, _, j in results if c == 200)
    finally:
        server.stop()


def test_hot_swap_under_load_zero_failures(tmp_path):
    base = tmp_path / "m"
    m1, m2 = sf.small_model(0), sf.small_model(1, scale=3.0)
    sf.export_version(m1, base / "1")
    poll = 0.5
    server = ModelServer([ModelEntry("m", base), ModelEntry("pinned", base, policy="specific", versions=(1,))],
                         Batching(16, 1000, 64, 2), rest_port=0, grpc_port=None, poll_seconds=poll).start()
    x = sf.images(2, seed=2)
    ref1 = sf.reference(m1, x)[0]["probabilities"]
    ref2 = sf.reference(m2, x)[0]["probabilities"]
    assert np.abs(ref1 - ref2).max() > 1e-2
    stop = threading.Event()
    results, seen_v2 = [], []

    def load(model):
        s = requests.Session()
        while not stop.is_set():
            r = s.post(server.rest_url + f"/v1/models/{model}:predict", json={"inputs": x.tolist()}, timeout=30)
            p = np.asarray(r.json()["outputs"]["probabilities"]) if r.status_code == 200 else None
            v = 2 if p is not None and np.allclose(p, ref2, atol=1e-5) else 1 if p is not None and \
                np.allclose(p, ref1, atol=1e-5) else 0
            results.append((model, r.status_code, v, time.monotonic()))

    try:
        threads = [threading.Thread(target=load, args=(m,)) for m in ("m", "m", "m", "pinned")]
        for t in threads:
            t.start()
        time.sleep(1.0)
        sf.export_version(m2, base / "2")
        t_export = time.monotonic()
        time.sleep(2.5 * poll + 1.0)
        stop.set()
        for t in threads:
            t.join()
        assert len(results) > 50
        assert all(code == 200 for _, code, _, _ in results), [r for r in results if r[1] != 200][:3]
        assert all(v in (1, 2) for _, _, v, _ in results)       # every answer is exactly v1 or v2
        first_v2 = min(t for m, _, v, t in results if m == "m" and v == 2)
        assert first_v2 - t_export < 2 * poll, first_v2 - t_export
        assert all(v == 2 for m, _, v, t in results if m == "m" and t > first_v2 + 0.2)
        assert all(v == 1 for m, _, v, _ in results if m == "pinned")
        status = requests.get(server.rest_url + "/v1/models/m").json()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]
    finally:
        stop.set()
        server.stop()


def test_client_retries_503_with_backoff(tmp_path):
    sf.export_version(sf.small_model(0), tmp_path / "m" / "1")
    server = ModelServer([ModelEntry("m", tmp_path / "m")], Batching(1, 0, 1, 1), rest_port=0, grpc_port=0,
                         poll_seconds=0).start()
    try:
        servable = server.registry.resolve("m")
        run = servable.run

        def slow(*a, **k):
            time.sleep(0.1)
            return run(*a, **k)
        servable.run = slow
        x = sf.images(1)
        for protocol, url in (("rest", server.rest_url), ("grpc", f"127.0.0.1:{server.grpc_port}")):
            clients = [Client(url, "m", protocol=protocol, retries=8, backoff=0.05) for _ in range(6)]
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                outs = list(pool.map(lambda c: c.predict(x)["class_ids"].tolist(), clients))
            assert outs == [outs[0]] * 6            # all six answered despite a 1-request queue
            no_retry = [Client(url, "m", protocol=protocol, retries=0) for _ in range(6)]
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                errs = list(pool.map(lambda c: _status_or_ok(c, x), no_retry))
            assert {503, "UNAVAILABLE"} & set(errs), errs    # without retries some are refused
    finally:
        server.stop()


def _status_or_ok(client, x):
    try:
        client.predict(x)
        return "ok"
    except ServingClientError as exc:
        return exc.status
