"""Embedded TF-Serving-compatible server (REST + gRPC, dynamic batching, version polling) and client."""

from .client import Client, ServingClientError
from .config import Batching, parse_batching, parse_model_config, parse_monitoring
from .registry import ModelEntry, Registry
from .server import ModelServer

__all__ = ["Client", "ServingClientError", "Batching", "parse_batching", "parse_model_config",
           "parse_monitoring", "ModelEntry", "Registry", "ModelServer"]
