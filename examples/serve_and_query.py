"""Train briefly on digits, export with a detector, serve (embedded server), query predict and detect
over REST and gRPC, and check the answers equal the in-process model's.

    python examples/serve_and_query.py                  # ~1 minute on a CPU; leaves nothing behind
    python examples/serve_and_query.py --keep models    # keeps the SavedModel in models/digits/1

The curl line is printed while the server is up (and the example queries it the same way); with
``--keep DIR`` it also prints the command that serves the kept model again.
"""

import argparse
import json
import os
import tempfile
import urllib.request

import numpy as np
import keras

import keras_advmi as kam
from keras_advmi.architectures import small_cnn
from keras_advmi.serving import Client, ModelEntry, ModelServer, parse_batching


def run(base):
    (x, y), (xt, yt) = kam.data.load("digits")
    model = small_cnn(x.shape[1:], classes=10)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    detector = kam.detection.MahalanobisDetector().fit(model, x)
    detector.calibrate(xt[len(xt) // 2:], fpr=0.05)
    kam.export(model, os.path.join(base, "digits", "1"), detector=detector, metadata={"dataset": "digits"},
               overwrite=True)

    batching = parse_batching(os.path.join(os.path.dirname(__file__), "..", "serving", "batching.config"))
    with ModelServer([ModelEntry("digits", os.path.join(base, "digits"))], batching, rest_port=0,
                     grpc_port=0) as server:
        local = np.argmax(model.predict(xt[:8], verbose=0), axis=1)
        for protocol, url in (("rest", server.rest_url), ("grpc", f"127.0.0.1:{server.grpc_port}")):
            client = Client(url, "digits", protocol=protocol)
            pred = client.predict(xt[:8])
            det = client.detect(xt[:8])
            assert np.array_equal(pred["class_ids"], local)
            print(f"{protocol}: class_ids {pred['class_ids'].tolist()} (labels {yt[:8].tolist()}), "
                  f"adversarial_score {np.round(det['adversarial_score'].astype(float), 2).tolist()}, "
                  f"is_adversarial {det['is_adversarial'].tolist()}")
            print(f"{protocol}: status {client.status()}")
            client.close()
        # What curl would send, sent now while the server is up.
        body = json.dumps({"instances": xt[:2].tolist()}).encode()
        url = f"{server.rest_url}/v1/models/digits:predict"
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        print(f"curl -d '{{\"instances\": [...]}}' {url}   (server up now; answered "
              f"{[p['class_ids'] for p in answer['predictions']]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", metavar="DIR", help="export to DIR/digits/1 and keep it (default: a temporary "
                                                      "directory, removed at the end)")
    args = parser.parse_args()
    if args.keep:
        run(os.path.abspath(args.keep))
        print(f"kept {os.path.join(os.path.abspath(args.keep), 'digits', '1')}; serve it again with: keras-advmi "
              f"serve --model_name digits --model_base_path {os.path.join(os.path.abspath(args.keep), 'digits')}")
        return
    with tempfile.TemporaryDirectory(prefix="models-") as base:
        run(base)


if __name__ == "__main__":
    main()
