"""The files keras-advmi adds to a SavedModel directory, named once for the exporter and the server.

TF Serving reads ``assets.extra/`` for files beside the graph that the graph itself does not load: its
warm-up file (``tf_serving_warmup_requests``, a TFRecord of ``PredictionLog`` records replayed before a
version is reported AVAILABLE), and ours, the export's metadata (``keras_advmi.json``).
"""

ASSETS_EXTRA = "assets.extra"
#: TF Serving's warm-up file name (tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc).
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "keras_advmi.json"
