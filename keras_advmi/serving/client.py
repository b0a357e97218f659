"""Client for TF Serving and the embedded server, over REST or gRPC.

    c = Client("http://127.0.0.1:8501", "robust")                    # REST
    c = Client("127.0.0.1:8500", "robust", protocol="grpc")         # gRPC (official stub)
    c.predict(x) -> {"probabilities": (n, classes), "class_ids": (n,)}
    c.detect(x)  -> {"adversarial_score", "is_adversarial", "threshold", "probabilities", "class_ids"}
    c.status(), c.metadata()        # TF Serving's REST JSON, whichever the protocol
    c.status_response()             # the same status as its proto (GetModelStatusResponse)

503 / UNAVAILABLE (full batching queue, model loading) is retried with exponential backoff
(``retries`` times, ``backoff`` seconds doubling); other errors raise ``ServingClientError``.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from .._checks import check_choice, check_nonnegative_int, invalid
from . import protos


class ServingClientError(RuntimeError):
    """A non-retryable error answer; ``status`` is the HTTP status or gRPC code name."""

    def __init__(self, status: int | str, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Client:
    """A TF Serving client for one model (optionally one ``version`` or ``label``), over REST or gRPC."""

    def __init__(self, url: str, model: str, protocol: str = "rest", version: int | None = None,
                 label: str | None = None, timeout: float = 30.0, retries: int = 5, backoff: float = 0.05):
        check_choice("protocol", protocol, ("rest", "grpc"))
        if not isinstance(model, str) or not model:
            raise invalid("model", "a non-empty model name", model)
        self.url, self.model, self.protocol = url.rstrip("/"), model, protocol
        self.version, self.label, self.timeout = version, label, timeout
        self.retries, self.backoff = check_nonnegative_int("retries", retries), float(backoff)
        if protocol == "rest":
            import requests     # optional: in the [dev] extra, not in install_requires (gRPC needs no requests)

            if not self.url.startswith(("http://", "https://")):
                self.url = "http://" + self.url
            self._session = requests.Session()
        else:
            target = self.url.split("://", 1)[-1]
            self._channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length",
                                                                    256 * 1024 * 1024)])
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # -- REST -----------------------------------------------------------------------------
    def _path(self, suffix=""):
        p = f"{self.url}/v1/models/{self.model}"
        if self.version is not None:
            p += f"/versions/{int(self.version)}"
        elif self.label is not None:
            p += f"/labels/{self.label}"
        return p + suffix

    def _rest(self, method, url, body=None):
        for attempt in range(self.retries + 1):
            r = self._session.request(method, url, json=body, timeout=self.timeout)
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt)
                continue
            try:
                data = r.json()
            except ValueError:
                data = {"error": r.text}
            if r.status_code != 200:
                raise ServingClientError(r.status_code, data.get("error", r.text))
            return data

    # -- gRPC -----------------------------------------------------------------------------
    def _spec(self, spec, signature=None):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.label is not None:
            spec.version_label = self.label
        if signature:
            spec.signature_name = signature

    def _grpc(self, fn, request):
        for attempt in range(self.retries + 1):
            try:
                return fn(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    time.sleep(self.backoff * 2 ** attempt)
                    continue
                raise ServingClientError(exc.code().name, exc.details()) from None

    # -- API ------------------------------------------------------------------------------
    def predict(self, x: np.ndarray, signature: str = "serving_default") -> dict[str, np.ndarray]:
        """Run ``signature`` on images x (n, H, W, C) float32 in [0, 1]; dict of NumPy arrays."""
        x = np.asarray(x, dtype=np.float32)
        if self.protocol == "rest":
            data = self._rest("POST", self._path(":predict"), {"signature_name": signature, "inputs": x.tolist()})
            out = data["outputs"]
            return {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) else {"output": np.asarray(out)}
        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec, signature)
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
        resp = self._grpc(self._stub.Predict, req)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}

    def detect(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The ``detect`` signature: probabilities, class ids and the adversarial-input score."""
        return self.predict(x, signature="detect")

    def status_response(self) -> get_model_status_pb2.GetModelStatusResponse:
        """The model's ``GetModelStatusResponse``: over gRPC as answered, over REST read back from the
        JSON document into the proto."""
        if self.protocol == "rest":
            return protos.status_from_json(self._rest("GET", self._path()))
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = self.model
        if self.version is not None:
            req.model_spec.version.value = int(self.version)
        return self._grpc(self._model_stub.GetModelStatus, req)

    def status(self) -> list[dict]:
        """TF Serving's model_version_status list (dicts with version, state, status), as its REST API
        prints it, whichever the protocol."""
        return protos.to_json(self.status_response())["model_version_status"]

    def metadata(self) -> dict:
        """{"model_spec": ..., "metadata": {"signature_def": {"signature_def": {...}}}}, as TF Serving's
        REST API prints it (defaults included), whichever the protocol."""
        if self.protocol == "rest":
            return self._rest("GET", self._path("/metadata"))
        req = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(req.model_spec)
        req.metadata_field.append("signature_def")
        resp = self._grpc(self._stub.GetModelMetadata, req)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        return protos.metadata_json(resp.model_spec, sdm)

    def close(self) -> None:
        """Close the HTTP session or the gRPC channel."""
        if self.protocol == "rest":
            self._session.close()
        else:
            self._channel.close()
