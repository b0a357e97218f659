"""Serving load benchmark: 64 concurrent clients against the embedded server with batching, the same
server without batching, and a naive one-request-one-predict Flask server (baseline, here only).

    nice -n 10 python benchmarks/serving_load.py --requests 1280 --clients 64
    python benchmarks/serving_load.py --requests 1280 --clients 64 --modes batching,batching-grpc,naive \
        --out benchmarks/results/serving_load.json

3 interleaved rounds by default (every server up, modes taking turns), medians and per-round ratios;
``--out`` writes them as JSON (rendered by benchmarks/results_page.py).

Each server runs in its own process on 127.0.0.1 (free port); one image per request, the same JSON
body for every mode. The REST load generator (--client raw, default) is 64 asyncio connections in
this process sending a pre-encoded HTTP/1.1 request (keep-alive, reconnecting when a server closes);
it costs little CPU per request, so on a 2-core machine the servers, not the client, set the pace.
--client requests keeps the earlier generator (64 threads with requests.Session, several times the
client CPU; docs/results.md has both). gRPC (--client raw) is its counterpart: 64 coroutines on 4 ``grpc.aio`` channels sending
a PredictRequest serialized once; with --client requests, the official stub from 64 threads.
Prints throughput, p50/p99 latency, failures, server and client CPU per request (from /proc) and
the ratios (gRPC / REST on the same batching server among them); the run is bounded by
--requests per mode and --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

import grpc
import numpy as np
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import serving_fixtures as sf  # noqa: E402  (after ROOT is on sys.path)

NAIVE = r'''
import sys, numpy as np, tensorflow as tf
from flask import Flask, request, jsonify
obj = tf.saved_model.load(sys.argv[1]); sigs = obj.signatures
app = Flask(__name__)
@app.post("/v1/models/m:predict")
def predict():
    body = request.get_json()
    out = sigs[body.get("signature_name", "serving_default")](inputs=tf.constant(np.asarray(body["instances"], np.float32)))
    out = {k: v.numpy().tolist() for k, v in out.items()}
    n = len(body["instances"])
    return jsonify({"predictions": [{k: v[i] for k, v in out.items()} for i in range(n)]})
print("ready", flush=True)
app.run("127.0.0.1", int(sys.argv[2]), threaded=True)
'''


def cpu_seconds(pid):
    """utime + stime of a process (all threads), from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(mode, base, batching_file):
    port, gport = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    if mode == "naive":
        cmd = [sys.executable, "-c", NAIVE, os.path.join(base, "m", "1"), str(port)]
    else:
        cmd = [sys.executable, "-m", "keras_advmi.cli", "serve", "--model_name", "m", "--model_base_path",
               os.path.join(base, "m"), "--rest_api_port", str(port), "--port", str(gport),
               "--file_system_poll_wait_seconds", "0"]
        if mode.startswith("batching"):
            cmd += ["--enable_batching", "--batching_parameters_file", batching_file]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    proc.stdout.readline()
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            if mode.endswith("grpc"):
                return proc, f"127.0.0.1:{gport}"
            return proc, f"http://127.0.0.1:{port}/v1/models/m:predict"
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"{mode} server did not start")


def grpc_request_bytes(x, signature):
    """A serialized PredictRequest (the official proto), encoded once like the raw REST request."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.signature_name = signature
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    return req.SerializeToString()


def grpc_raw_load(target, data, n, clients, max_seconds, channels=4):
    """Light gRPC client, the counterpart of ``raw_load``: ``clients`` coroutines on ``grpc.aio``
    channels calling PredictionService/Predict with the request bytes encoded once (no per-call
    proto work in the client); one answer is parsed in full and must carry class_ids."""
    res, left, sample = [], [n], []
    t_end = time.perf_counter() + max_seconds

    async def run():
        chans = [grpc.aio.insecure_channel(target) for _ in range(channels)]
        calls = [c.unary_unary("/tensorflow.serving.PredictionService/Predict") for c in chans]

        async def worker(i):
            call = calls[i % len(calls)]
            while left[0] > 0:
                t0 = time.perf_counter()
                if t0 > t_end:
                    break
                left[0] -= 1
                try:
                    resp = await call(data, timeout=60)
                    ok = len(resp) > 0
                    if ok and not sample:
                        sample.append(resp)
                except grpc.aio.AioRpcError:
                    ok = False
                res.append((ok, time.perf_counter() - t0))
        await asyncio.gather(*(worker(i) for i in range(clients)))
        for c in chans:
            await c.close()

    t0 = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - t0
    if sample:
        assert "class_ids" in predict_pb2.PredictResponse.FromString(sample[0]).outputs
    return _summary(res, wall)


def grpc_caller(target, x, signature):
    """A callable doing one Predict with the official stub (one channel shared by the threads)."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.signature_name = signature
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))

    def call():
        return "class_ids" in stub.Predict(req, timeout=60).outputs
    return call


def raw_load(url, body, n, clients, max_seconds):
    """Light HTTP/1.1 client: asyncio sockets, the request bytes encoded once, ``clients`` keep-alive
    connections (reconnecting when the server closes, e.g. Werkzeug's HTTP/1.0). Cheap for the
    client, so the server, not the load generator, sets the pace."""
    u = urlsplit(url)
    host, port = u.hostname, u.port
    data = body.encode() if isinstance(body, str) else body
    req = (f"POST {u.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    res = []
    t_end = time.perf_counter() + max_seconds
    left = [n]
    sample = []

    async def read_response(reader):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        version, code = lines[0].split(b" ", 2)[:2]
        hdrs = {}
        for ln in lines[1:]:
            if b":" in ln:
                k, v = ln.split(b":", 1)
                hdrs[k.strip().lower()] = v.strip().lower()
        if b"content-length" in hdrs:
            payload = await reader.readexactly(int(hdrs[b"content-length"]))
        else:
            payload = await reader.read()
        close = hdrs.get(b"connection") == b"close" or (version == b"HTTP/1.0" and
                                                         hdrs.get(b"connection") != b"keep-alive")
        return int(code), payload, close

    async def worker():
        reader = writer = None
        while left[0] > 0:
            t0 = time.perf_counter()
            if t0 > t_end:
                break
            left[0] -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(req)
                code, payload, close = await asyncio.wait_for(read_response(reader), 60)
                ok = code == 200 and b'"predictions"' in payload
                if ok and not sample:
                    sample.append(payload)
                if close:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ValueError):
                ok = False
                if writer is not None:
                    writer.close()
                reader = writer = None
            res.append((ok, time.perf_counter() - t0))
        if writer is not None:
            writer.close()

    async def run():
        await asyncio.gather(*(worker() for _ in range(clients)))

    t0 = time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - t0
    if sample:   # one answer parsed in full: a 200 must carry real predictions
        preds = json.loads(sample[0])["predictions"]
        assert len(preds) == 1 and "class_ids" in preds[0], sample[0][:200]
    return _summary(res, wall)


def _summary(res, wall):
    lat = np.asarray([t for _, t in res]) * 1e3
    return {"requests": len(res), "failed": sum(not ok for ok, _ in res), "rps": len(res) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def load(url, body, n, clients, max_seconds):
    sessions = [requests.Session() for _ in range(clients)] if not callable(body) else None
    t_end = time.perf_counter() + max_seconds

    def one(i):
        t0 = time.perf_counter()
        if t0 > t_end:
            return None
        if sessions is None:
            try:
                ok = body()
            except Exception:
                ok = False
            return ok, time.perf_counter() - t0
        try:
            r = sessions[i % clients].post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
            ok = r.status_code == 200 and "predictions" in r.json()
        except requests.RequestException:
            ok = False
        return ok, time.perf_counter() - t0

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        res = [r for r in pool.map(one, range(n)) if r is not None]
    return _summary(res, time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1280, help="requests per mode and signature")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time cap per measurement")
    ap.add_argument("--modes", default="batching,nobatch,naive,batching-grpc",
                    help="batching, nobatch, naive (Flask), batching-grpc (official stub)")
    ap.add_argument("--out", help="write the rounds, medians and ratios to this JSON file")
    ap.add_argument("--rounds", type=int, default=3,
                    help="> 1: start every mode's server, then let the modes take turns this many times "
                         "(medians and per-round ratios; fairer on a machine shared with other jobs)")
    ap.add_argument("--batching-config", default=os.path.join(ROOT, "serving", "batching.config"),
                    help="BatchingParameters text proto for the batching modes")
    ap.add_argument("--client", choices=("raw", "requests"), default="raw",
                    help="REST load generator: raw = asyncio sockets with the request pre-encoded (cheap); "
                         "requests = 64 threads with requests.Session (the client burns most of the CPU)")
    ap.add_argument("--model", choices=("tiny", "mnist_cnn"), default="mnist_cnn",
                    help="tiny: 8x8 conv(4)+dense; mnist_cnn: 28x28 conv32-conv64-dense128")
    args = ap.parse_args(argv)
    base = tempfile.mkdtemp(prefix="serving-bench-")
    model = sf.mnist_cnn(0) if args.model == "mnist_cnn" else sf.small_model(0)
    sf.export_version(model, os.path.join(base, "m", "1"))
    batching_file = args.batching_config
    x = sf.images(1, seed=0, shape=model.input_shape[1:]).tolist()
    bodies = {"predict": json.dumps({"instances": x}),
              "detect": json.dumps({"signature_name": "detect", "instances": x})}
    results = collections.defaultdict(list)          # (mode, signature) -> one dict per round

    def prepare(mode):
        proc, url = start(mode, base, batching_file)
        grpc_mode = mode.endswith("grpc")
        if grpc_mode and args.client == "raw":
            mode_bodies = {sig: grpc_request_bytes(x, "serving_default" if sig == "predict" else sig)
                           for sig in bodies}
            run = grpc_raw_load
        elif grpc_mode:
            mode_bodies = {sig: grpc_caller(url, x, "serving_default" if sig == "predict" else sig)
                           for sig in bodies}
            run = load
        else:
            mode_bodies = bodies
            run = raw_load if args.client == "raw" else load
        for body in mode_bodies.values():                                                  # warm-up
            run(url, body, args.clients * 2, args.clients, 10)
        return proc, url, mode_bodies, run

    def one_round(mode, ctx, rnd):
        proc, url, mode_bodies, run = ctx
        for sig, body in mode_bodies.items():
            s0, c0 = cpu_seconds(proc.pid), time.process_time()
            r = run(url, body, args.requests, args.clients, args.max_seconds)
            s1, c1 = cpu_seconds(proc.pid), time.process_time()
            known = s0 is not None and s1 is not None
            r["server_cpu_ms"] = (s1 - s0) * 1e3 / r["requests"] if known else float("nan")
            r["client_cpu_ms"] = (c1 - c0) * 1e3 / r["requests"]
            results[(mode, sig)].append(r)
            tag = f"r{rnd} " if args.rounds > 1 else ""
            print(f"{tag}{mode:13s} {sig:8s} {r['requests']:5d} req  {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms"
                  f"  p99 {r['p99_ms']:7.1f} ms  failed {r['failed']}  cpu/req server {r['server_cpu_ms']:.2f} ms"
                  f" client {r['client_cpu_ms']:.2f} ms", flush=True)

    def stop(ctx):
        ctx[0].terminate()
        ctx[0].wait(timeout=30)

    modes = args.modes.split(",")
    live = {}
    try:
        if args.rounds == 1:       # one server at a time
            for mode in modes:
                live[mode] = prepare(mode)
                one_round(mode, live[mode], 0)
                stop(live.pop(mode))
        else:                      # all servers up; modes take turns, so load from other jobs hits all alike
            for mode in modes:
                live[mode] = prepare(mode)
            for rnd in range(args.rounds):
                for mode in modes:
                    one_round(mode, live[mode], rnd)
    finally:
        for ctx in live.values():
            stop(ctx)

    def med(mode, sig, field):
        return float(np.median([r[field] for r in results[(mode, sig)]]))

    if args.rounds > 1:
        for (mode, sig), rs in results.items():
            print(f"median {mode:13s} {sig:8s} {med(mode, sig, 'rps'):8.1f} req/s"
                  f"  p50 {med(mode, sig, 'p50_ms'):7.1f} ms  p99 {med(mode, sig, 'p99_ms'):7.1f} ms"
                  f"  cpu/req server {med(mode, sig, 'server_cpu_ms'):.2f} ms"
                  f"  failed {sum(r['failed'] for r in rs)}")
    summary = {"requests_per_mode": args.requests, "clients": args.clients, "rounds": args.rounds,
               "model": args.model, "client": args.client, "cpu_cores": os.cpu_count(),
               "batching_config": os.path.relpath(args.batching_config, ROOT)}
    if ("batching", "predict") in results:
        b = results[("batching", "predict")]
        for other in ("nobatch", "naive", "batching-grpc"):
            if (other, "predict") in results:
                o = results[(other, "predict")]
                ratios = [x["rps"] / y["rps"] for x, y in zip(b, o)]
                spread = f" (rounds: {', '.join(f'{q:.2f}' for q in ratios)})" if len(ratios) > 1 else ""
                cpu = med(other, "predict", "server_cpu_ms") / med("batching", "predict", "server_cpu_ms")
                print(f"throughput batching / {other}: {np.median(ratios):.2f}x{spread}   "
                      f"server CPU per request {other} / batching: {cpu:.2f}x")
                summary[f"batching_over_{other}_rps_median"] = round(float(np.median(ratios)), 2)
                summary[f"batching_over_{other}_rps_rounds"] = ", ".join(f"{q:.2f}" for q in ratios)
        if ("batching-grpc", "predict") in results:
            g = results[("batching-grpc", "predict")]
            ratios = [y["rps"] / x["rps"] for x, y in zip(b, g)]
            print(f"throughput batching-grpc / batching (REST), same server: {np.median(ratios):.2f}x"
                  + (f" (rounds: {', '.join(f'{q:.2f}' for q in ratios)})" if len(ratios) > 1 else ""))
            summary["grpc_over_rest_rps_median"] = round(float(np.median(ratios)), 2)
            summary["grpc_over_rest_rps_rounds"] = ", ".join(f"{q:.2f}" for q in ratios)
        for mode in ("batching", "nobatch", "naive", "batching-grpc"):
            if (mode, "detect") in results:
                print(f"{mode}: detect/predict p50 latency ratio "
                      f"{med(mode, 'detect', 'p50_ms') / med(mode, 'predict', 'p50_ms'):.2f}")
    print("total failed:", sum(r["failed"] for rs in results.values() for r in rs))
    summary["failed"] = sum(r["failed"] for rs in results.values() for r in rs)
    if args.out:
        medians = [{"mode": mode, "signature": sig, **{f: round(med(mode, sig, f), 2) for f in
                    ("rps", "p50_ms", "p99_ms", "server_cpu_ms", "client_cpu_ms")}}
                   for (mode, sig) in results]
        rounds = [{"round": i, "mode": mode, "signature": sig, **{k: round(v, 2) if isinstance(v, float) else v
                                                                  for k, v in r.items()}}
                  for (mode, sig), rs in results.items() for i, r in enumerate(rs)]
        with open(args.out, "w") as fh:
            json.dump({"command": "python benchmarks/serving_load.py " + " ".join(argv or sys.argv[1:]),
                       **summary, "medians": medians, "per_round": rounds}, fh, indent=1)
            fh.write("\n")
        print("wrote", args.out)


if __name__ == "__main__":
    main()
