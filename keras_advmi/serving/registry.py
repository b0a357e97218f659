"""Model registry: versions polled from configured base paths, version policies, labels, hot swap.

A model is ``BASE/VERSION/saved_model.pb``. As TF Serving's file-system source reads it
(``file_system_storage_path_source.cc``), the directory name is kept for the path and its integer
value is the version, so ``00000123`` is version 123; only ASCII digits that fit an int64 count
(``²`` is ``str.isdigit()`` but no version; hidden temp dirs are skipped too). Anything else is
skipped with one log line per name, and polling goes on for every other version and model.
Policies as TF Serving's ``ServableVersionPolicy``: ``latest`` (N newest, default 1), ``all``,
``specific`` (listed versions). Every poll loads new wanted versions *before* unloading
unwanted ones; a request holds a reference to its ``Servable`` so an unload never fails it.
A version is reported LOADING while it loads and replays its warm-up file
(``assets.extra/tf_serving_warmup_requests``, see ``warmup``), and AVAILABLE only after both.
A version that fails to load (or to warm up) is reported END with the error and retried with
exponential backoff: ``retry_initial_s`` after the first failure, doubling up to ``retry_max_s``,
one log line per attempt; the wait starts over when the files in its directory change (names,
sizes, modification times), so a fixed version loads at the next poll. A loaded version is
never dropped unless the policy no longer wants it (or it disappeared from disk). A base path
that is itself a SavedModel (``BASE/saved_model.pb``, no version directory) is reported once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from grpc import StatusCode
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.config import model_server_config_pb2

from .._checks import check_positive, invalid
from .._savedmodel_files import ASSETS_EXTRA
from .errors import ServingError, invalid_argument
from .protos import GetModelStatusResponse, ModelVersionStatus, version_status
from .warmup import replay_warmup

logger = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_LOAD_LOCK = threading.Lock()
_VERSION_RE = re.compile(r"[0-9]{1,19}")
MAX_VERSION = 2 ** 63 - 1
SAVED_MODEL_PB = tf.saved_model.SAVED_MODEL_FILENAME_PB      # "saved_model.pb": a directory holding it is a model
_SAVED_MODEL_FILES = {SAVED_MODEL_PB, tf.saved_model.SAVED_MODEL_FILENAME_PBTXT, "fingerprint.pb",
                      tf.saved_model.VARIABLES_DIRECTORY, tf.saved_model.ASSETS_DIRECTORY, ASSETS_EXTRA}
_FINGERPRINT_FILES = 10_000     # at most this many directory entries are looked at per failed version and poll


def parse_version(text: str) -> int | None:
    """int64 version of a directory name or URL segment of ASCII digits, else None."""
    if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
        return None
    v = int(text)
    return v if v <= MAX_VERSION else None


def valid_model_name(name: str) -> bool:
    """True for names TF Serving style URLs can carry and that cannot escape a base path."""
    return bool(_NAME_RE.match(name or "")) and ".." not in name


class Servable:
    """One loaded SavedModel version; ``run(signature, inputs)`` -> dict of NumPy arrays.

    A TF2 SavedModel (one with an object graph, as ``kam.export`` / ``keras.export`` write) runs
    its restored signature functions, and requests are checked against their ``TensorSpec``s (rank
    and fixed dimensions). A TF1 SavedModel (``tf.compat.v1.saved_model.Builder``, no object graph)
    is fed as TF Serving's C++ ``Session::Run`` feeds it: the signature's tensors take the values as
    sent and the graph decides (y = 0.5 x + 2 on ``x`` [-1, 1] answers [3] for [3] values, as TF
    Serving does); only the dtype is checked before queueing. Each signature runs through the
    loaded graph's ``prune(feeds, fetches)``, whose function does not hold its arguments to the
    feed tensors' static shapes.
    """

    def __init__(self, name: str, version: int, path: str):
        self.name, self.version, self.path = name, int(version), path
        meta = _serving_meta_graph(path)
        self.signature_defs = {k: meta.signature_def[k] for k in meta.signature_def if not k.startswith("__")}
        self.tf1 = not meta.object_graph_def.nodes
        with _LOAD_LOCK:
            self._obj = tf.saved_model.load(path)
        if self.tf1:
            self._pruned, self.specs = {}, {}
            for sig, sdef in self.signature_defs.items():
                aliases = sorted(sdef.inputs)
                fn = self._obj.prune([sdef.inputs[a].name for a in aliases],
                                     {o: sdef.outputs[o].name for o in sdef.outputs})
                self._pruned[sig] = (aliases, fn)
                self.specs[sig] = {a: tf.TensorSpec(None, tf.dtypes.as_dtype(sdef.inputs[a].dtype), name=a)
                                   for a in aliases}
            self.signatures = dict(self._pruned)
        else:
            self.signatures = dict(self._obj.signatures)
            self.specs = {sig: dict(fn.structured_input_signature[1]) for sig, fn in self.signatures.items()}

    def signature(self, name: str | None) -> str:
        """The signature's name (``serving_default`` when empty); INVALID_ARGUMENT when unknown."""
        name = name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        if name not in self.signatures:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        return name

    def input_specs_for(self, name: str | None) -> tuple[str, dict[str, tf.TensorSpec]]:
        """(resolved signature name, {input: tf.TensorSpec}); INVALID_ARGUMENT when unknown."""
        name = self.signature(name)
        return name, self.specs[name]

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of ``signature`` on ``inputs``; a value the graph refuses is INVALID_ARGUMENT."""
        specs = self.specs[signature]
        missing = [key for key in specs if key not in inputs]
        if missing:
            raise invalid_argument(f"Missing input: {missing[0]}")
        try:
            feed = {key: tf.convert_to_tensor(inputs[key], dtype=spec.dtype) for key, spec in specs.items()}
            if self.tf1:
                aliases, fn = self._pruned[signature]
                out = fn(*[feed[a] for a in aliases])
            else:
                out = self.signatures[signature](**feed)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise invalid_argument(_tf_message(exc)) from None
        return {k: v.numpy() for k, v in out.items()}


def _tf_message(exc):
    """The informative line of a TF error (drops "Graph execution error", node/stack lines)."""
    text = getattr(exc, "message", None) or str(exc)
    skip = ("Graph execution error", "Detected at node", "<stack traces", "File ", "[[", "\t")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(skip)
             and not ln.startswith((" ", "\t"))]
    return (lines[0] if lines else text.strip().splitlines()[0])[:500]


def _serving_meta_graph(path):
    """The MetaGraphDef TF Serving loads: the one tagged ``serve`` (else the first)."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_PB), "rb") as fh:
        sm.ParseFromString(fh.read())
    for meta in sm.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    return sm.meta_graphs[0]


class ModelEntry:
    """One configured model: its base path, version policy (``latest`` N, ``all``, ``specific``) and
    labels; the registry keeps its loaded ``Servable``s and each version's ``ModelVersionStatus``."""

    def __init__(self, name: str, base_path: str | os.PathLike, policy: str = "latest",
                 versions: Sequence[int] = (1,), labels: Mapping[str, int] | None = None):
        if not valid_model_name(name):
            raise ValueError(f"invalid model name {name!r}: expected letters, digits, '_', '-', '.'")
        self.name, self.base_path = name, os.path.abspath(base_path)
        self.policy, self.policy_versions = policy, tuple(int(v) for v in versions)
        self.labels = dict(labels or {})
        self.loaded = {}          # version -> Servable
        self.states: dict[int, ModelVersionStatus] = {}
        self.skipped = set()      # directory names already logged as not a version
        self.retry: dict[int, _Retry] = {}   # version -> backoff state of a version that failed to load


class _Retry:
    """Backoff state of one version that failed to load: failures so far, when to try next, and the
    fingerprint of its directory at the last attempt."""

    def __init__(self, failures: int, next_at: float, fingerprint):
        self.failures, self.next_at, self.fingerprint = failures, next_at, fingerprint


def _fingerprint(path: str):
    """(relative path, size, mtime_ns) of the entries under ``path``, sorted; the first
    ``_FINGERPRINT_FILES`` entries of the walk only, so a huge directory costs a bounded time."""
    out = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files) + dirs:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            out.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
            if len(out) >= _FINGERPRINT_FILES:
                return tuple(out)
    return tuple(out)


def entries_from_config(msg: model_server_config_pb2.ModelServerConfig) -> list[ModelEntry]:
    """ModelEntry list from a ModelServerConfig message."""
    out = []
    for cfg in msg.model_config_list.config:
        kind = cfg.model_version_policy.WhichOneof("policy_choice")
        if kind == "all":
            policy, versions = "all", ()
        elif kind == "specific":
            policy, versions = "specific", tuple(cfg.model_version_policy.specific.versions)
        else:
            n = cfg.model_version_policy.latest.num_versions if kind == "latest" else 0
            policy, versions = "latest", (n or 1,)
        out.append(ModelEntry(cfg.name, cfg.base_path, policy, versions, dict(cfg.version_labels)))
    return out


class Registry:
    """Holds ModelEntry objects; ``poll()`` syncs them with disk; ``resolve()`` picks a servable."""

    def __init__(self, entries: Iterable[ModelEntry], retry_initial_s: float = 1.0, retry_max_s: float = 300.0):
        """``retry_initial_s`` / ``retry_max_s``: seconds before the first retry of a version that failed
        to load, doubling per failure up to the cap (positive, cap >= initial)."""
        self.retry_initial_s = check_positive("retry_initial_s", retry_initial_s)
        self.retry_max_s = check_positive("retry_max_s", retry_max_s)
        if self.retry_max_s < self.retry_initial_s:
            raise invalid("retry_max_s", f"seconds >= retry_initial_s ({retry_initial_s})", retry_max_s)
        self._entries = {e.name: e for e in entries}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    @staticmethod
    def _on_disk(entry):
        """{version: directory name} of the complete versions under the entry's base path."""
        try:
            names = os.listdir(entry.base_path)
        except OSError:
            return {}
        found = {}
        if SAVED_MODEL_PB in names and SAVED_MODEL_PB not in entry.skipped:
            entry.skipped.update(_SAVED_MODEL_FILES)
            logger.warning("model %s: the base path %s is itself a SavedModel; servers load BASE/VERSION/"
                           "saved_model.pb with VERSION a positive integer: move it into a version directory "
                           "(e.g. %s) or export to BASE/NAME/VERSION", entry.name, entry.base_path,
                           os.path.join(entry.base_path, "1"))
        for n in sorted(names, key=lambda n: (len(n), n)):
            v = parse_version(n)
            if v is None or v in found:
                if not n.startswith(".") and n not in entry.skipped:
                    entry.skipped.add(n)
                    logger.warning("model %s: skipping %r under %s (%s)", entry.name, n, entry.base_path,
                                   "not a version number" if v is None else f"duplicate of version {v}")
                continue
            if os.path.isfile(os.path.join(entry.base_path, n, SAVED_MODEL_PB)):
                found[v] = n
        return found

    @staticmethod
    def _wanted(entry, disk):
        if entry.policy == "all":
            return set(disk)
        if entry.policy == "specific":
            return set(entry.policy_versions) & set(disk)
        return set(disk[-entry.policy_versions[0]:]) if disk else set()

    def poll(self) -> int:
        """Load wanted new versions, then unload unwanted ones. Returns the number of changes."""
        changes = 0
        for entry in self._entries.values():
            try:
                changes += self._poll_entry(entry)
            except Exception:  # one model's trouble must not stop polling the others
                logger.exception("polling model %s failed", entry.name)
        return changes

    def _poll_entry(self, entry):
        changes = 0
        paths = self._on_disk(entry)
        disk = sorted(paths)
        wanted = self._wanted(entry, disk)
        for v in list(entry.retry):
            if v not in paths:      # gone from disk: a version written there later starts afresh
                entry.retry.pop(v)
        for v in sorted(wanted - set(entry.loaded)):
            path = os.path.join(entry.base_path, paths[v])
            retry = entry.retry.get(v)
            fingerprint = None
            if retry is not None:
                fingerprint = _fingerprint(path)
                if time.monotonic() < retry.next_at and fingerprint == retry.fingerprint:
                    continue
            if self._load(entry, v, path, retry, fingerprint):
                changes += 1
        # unload only once something wanted is available, so a model never goes dark
        if any(v in entry.loaded for v in wanted):
            for v in sorted(set(entry.loaded) - wanted):
                with self._lock:
                    entry.loaded.pop(v)
                    entry.states[v] = version_status(v, "END")
                changes += 1
                logger.info("unloaded %s version %d", entry.name, v)
        return changes

    def _load(self, entry, v, path, retry, fingerprint) -> bool:
        """Load, warm up and publish version ``v``; on failure record END and the next retry time."""
        if fingerprint is None:
            fingerprint = _fingerprint(path)
        with self._lock:
            entry.states[v] = version_status(v, "LOADING")
        try:
            servable = Servable(entry.name, v, path)
            records = replay_warmup(servable)
        except Exception as exc:  # a bad version must not take the server down
            failures = (retry.failures if retry is not None and fingerprint == retry.fingerprint else 0) + 1
            wait = min(self.retry_max_s, self.retry_initial_s * 2.0 ** (failures - 1))
            entry.retry[v] = _Retry(failures, time.monotonic() + wait, fingerprint)
            logger.warning("model %s version %d failed to load (attempt %d, next in %.3g s unless its files "
                           "change): %s", entry.name, v, failures, wait, exc)
            with self._lock:
                entry.states[v] = version_status(v, "END", "UNKNOWN", str(exc)[:300])
            return False
        entry.retry.pop(v, None)
        with self._lock:
            entry.loaded[v] = servable
            entry.states[v] = version_status(v, "AVAILABLE")
        logger.info("loaded %s version %d (%d warm-up records replayed)", entry.name, v, records)
        return True

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The Servable for NAME (latest loaded), NAME/versions/N or NAME/labels/L."""
        with self._lock:
            entry = self._entries.get(name) if valid_model_name(name) else None
            if label is not None:
                if entry is None or label not in entry.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = entry.labels[label]
            if version is not None:
                s = entry.loaded.get(int(version)) if entry else None
                if s is None:
                    raise ServingError(StatusCode.NOT_FOUND,
                                       f"Servable not found for request: Specific({name}, {version})")
                return s
            if entry is None or not entry.loaded:
                raise ServingError(StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
            return entry.loaded[max(entry.loaded)]

    def status(self, name: str, version: int | None = None) -> GetModelStatusResponse:
        """TF Serving's ``GetModelStatusResponse`` (newest version first), as ``GetModelStatusImpl``
        answers it: a version label is not looked at there (only ``model_spec.version``), so callers
        pass none. NOT_FOUND when the model or the version has no status."""
        entry = self._entries.get(name) if valid_model_name(name) else None
        with self._lock:
            states = dict(entry.states) if entry else {}
        if version is not None:
            if int(version) not in states:
                raise ServingError(StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            states = {int(version): states[int(version)]}
        elif not states:
            raise ServingError(StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return GetModelStatusResponse(model_version_status=[states[v] for v in sorted(states, reverse=True)])
