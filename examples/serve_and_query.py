"""Train briefly on digits, export with a detector, serve (embedded server), query predict and detect
over REST and gRPC, and check the answers equal the in-process model's.

    python examples/serve_and_query.py          # ~1 minute on a CPU
"""

import os
import tempfile

import numpy as np
import keras

import keras_advmi as kam
from keras_advmi.architectures import small_cnn
from keras_advmi.serving import Client, ModelEntry, ModelServer, parse_batching


def main():
    (x, y), (xt, yt) = kam.data.load("digits")
    model = small_cnn(x.shape[1:], classes=10)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    detector = kam.detection.MahalanobisDetector().fit(model, x)
    detector.calibrate(xt[len(xt) // 2:], fpr=0.05)
    base = tempfile.mkdtemp(prefix="models-")
    kam.export(model, os.path.join(base, "digits", "1"), detector=detector, metadata={"dataset": "digits"})

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
        print(f"curl -d '{{\"instances\": [...]}}' {server.rest_url}/v1/models/digits:predict")


if __name__ == "__main__":
    main()
