"""Parse TF Serving's text-proto configs: ModelServerConfig, BatchingParameters, MonitoringConfig.

``ModelServerConfig`` comes from ``tensorflow-serving-api``. The pip package ships neither
``session_bundle_config.proto`` (BatchingParameters) nor ``monitoring_config.proto``, so those two
messages are declared here with TF Serving's own package, names, field numbers and types
(``tensorflow.serving.BatchingParameters`` uses ``google.protobuf.Int64Value`` wrappers), so the same
text files parse here and in ``tensorflow_model_server``.
"""

from __future__ import annotations

import dataclasses
import os

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory
from tensorflow_serving.config import model_server_config_pb2

from .._checks import check_int_at_least, invalid

_F = descriptor_pb2.FieldDescriptorProto


def _build_messages():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(
        name="keras_advmi/tf_serving_subset.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    bp = fd.message_type.add(name="BatchingParameters")
    i64 = ".google.protobuf.Int64Value"
    for name, num, typ, tname, label in [
            ("max_batch_size", 1, _F.TYPE_MESSAGE, i64, _F.LABEL_OPTIONAL),
            ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, i64, _F.LABEL_OPTIONAL),
            ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, i64, _F.LABEL_OPTIONAL),
            ("num_batch_threads", 4, _F.TYPE_MESSAGE, i64, _F.LABEL_OPTIONAL),
            ("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue", _F.LABEL_OPTIONAL),
            ("allowed_batch_sizes", 6, _F.TYPE_INT64, None, _F.LABEL_REPEATED),
            ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None, _F.LABEL_OPTIONAL),
            ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue",
             _F.LABEL_OPTIONAL),
            ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, i64, _F.LABEL_OPTIONAL)]:
        f = bp.field.add(name=name, number=num, type=typ, label=label)
        if tname:
            f.type_name = tname
    prom = fd.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    mon = fd.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                  type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
            get(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")))


BatchingParameters, MonitoringConfig = _build_messages()
ModelServerConfig = model_server_config_pb2.ModelServerConfig


@dataclasses.dataclass(frozen=True)
class Batching:
    """Effective batching settings (TF Serving's defaults when a field is unset)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0          # 0: max_batch_size


def _read(path_or_text):
    text = str(path_or_text)
    if "{" not in text and ":" not in text:
        with open(text, encoding="utf-8") as fh:
            return fh.read()
    return text


def parse_model_config(path_or_text: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """ModelServerConfig from a file path or text; ValueError on a parse error or no model."""
    msg = text_format.Parse(_read(path_or_text), ModelServerConfig())
    if not msg.model_config_list.config:
        raise ValueError("model_config_file: expected a model_config_list with at least one config")
    return msg


def parse_batching(path_or_text: str | os.PathLike) -> Batching:
    """Batching from a BatchingParameters text proto (file path or text)."""
    msg = text_format.Parse(_read(path_or_text), BatchingParameters())
    d = Batching()
    vals = {f: getattr(msg, f).value if msg.HasField(f) else getattr(d, f)
            for f in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")}
    for k, v in vals.items():
        check_int_at_least(k, v, 0 if k == "batch_timeout_micros" else 1)
    split = msg.enable_large_batch_splitting.value
    exec_size = msg.max_execution_batch_size.value if msg.HasField("max_execution_batch_size") else 0
    if not 0 <= exec_size <= vals["max_batch_size"]:
        raise invalid("max_execution_batch_size", f"an integer in [0, max_batch_size ({vals['max_batch_size']})] "
                      "(0: max_batch_size)", exec_size)
    return Batching(**vals, enable_large_batch_splitting=split, max_execution_batch_size=exec_size)


def batching_from_flags(enable_batching: bool, batching_parameters_file: str | os.PathLike | None) -> Batching | None:
    """The batching settings of tensorflow_model_server's ``--enable_batching`` and
    ``--batching_parameters_file`` (a file turns batching on): None when batching is off."""
    if batching_parameters_file:
        return parse_batching(batching_parameters_file)
    return Batching() if enable_batching else None


def parse_monitoring(path_or_text: str | os.PathLike) -> str | None:
    """Prometheus path from a MonitoringConfig text proto, or None when disabled."""
    msg = text_format.Parse(_read(path_or_text), MonitoringConfig())
    if not msg.prometheus_config.enable:
        return None
    return msg.prometheus_config.path or "/monitoring/prometheus/metrics"
