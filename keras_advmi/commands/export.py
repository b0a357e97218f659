"""``keras-advmi export``: a .keras model to a TF-Serving SavedModel (serving_default [+ detect])."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from . import UsageError
from ._common import dataset_arg, keras_file_arg, load_dataset, load_model, positive_int

logger = logging.getLogger(__name__)

DETECTORS = ("mahalanobis", "feature_squeezing", "mi")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export", help="write a SavedModel for TF Serving (serving_default + detect)",
        description="Export MODEL.keras to OUT_BASE/NAME/VERSION atomically (VERSION a positive integer: the layout "
                    "TF Serving and `keras-advmi serve` load; kam.export in Python takes any directory). With "
                    "--detector, fit it on clean training images of --dataset, calibrate it on held-out test images "
                    "at --fpr and add the `detect` signature. train_config.json / robustness.json beside the model "
                    "(written by `keras-advmi train`) go into assets.extra/keras_advmi.json, beside TF Serving's "
                    "warm-up requests (assets.extra/tf_serving_warmup_requests).")
    p.add_argument("model", type=keras_file_arg, help="a .keras file (logits model or AdversarialModel)")
    p.add_argument("path", help="OUT_BASE/NAME/VERSION, VERSION a positive integer (serve with "
                                "--model_base_path OUT_BASE/NAME)")
    p.add_argument("--detector", choices=DETECTORS, help="add a `detect` signature with this detector")
    p.add_argument("--dataset", type=dataset_arg,
                   help="dataset to fit/calibrate the detector on (default: from train_config.json, else digits)")
    p.add_argument("--fpr", type=float, default=0.05, help="target false-positive rate in (0, 1) (default 0.05)")
    p.add_argument("--fit-images", type=positive_int, default=5000, help="clean training images to fit on")
    p.add_argument("--calibration-images", type=positive_int, default=1000,
                   help="held-out clean test images (from the second half of the test set) to calibrate on")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version directory")
    p.set_defaults(run=run)
    return p


def _side_files(model_path):
    folder = Path(model_path).parent
    meta = {}
    config = folder / "train_config.json"
    if config.exists():
        cfg = json.loads(config.read_text())
        meta.update({k: cfg[k] for k in ("dataset", "epsilon") if k in cfg})
        if "defense" in cfg:
            meta["defense"] = {"name": cfg["defense"]}
        meta["training"] = cfg
    robustness = folder / "robustness.json"
    if robustness.exists():
        meta["robustness"] = json.loads(robustness.read_text())
    return meta


def run(args):
    from .._model import network_of
    from ..detection import FeatureSqueezingDetector, MahalanobisDetector, MIScoreDetector
    from ..export import export, version_path

    if not 0.0 < args.fpr < 1.0:
        raise UsageError(f"--fpr must be in (0, 1), got {args.fpr}")
    target = version_path(args.path)
    if target.exists() and not args.overwrite:
        raise UsageError(f"export path {str(target)!r} already exists; choose a new version or pass --overwrite")
    model = load_model(args.model)
    metadata = _side_files(args.model)
    detector = None
    if args.detector:
        dataset = args.dataset or metadata.get("dataset") or "digits"
        metadata["dataset"] = dataset
        (x, y), (xt, _) = load_dataset(dataset)
        logits_model = network_of(model)
        shape = tuple(logits_model.inputs[0].shape[1:])
        if tuple(x.shape[1:]) != shape:
            raise UsageError(f"dataset {dataset!r} has images of shape {tuple(x.shape[1:])} but the model takes "
                             f"{shape}; pass the dataset the model was trained on with --dataset")
        half = len(xt) // 2
        x_cal = xt[half:half + args.calibration_images]
        detector = {"mahalanobis": MahalanobisDetector, "feature_squeezing": FeatureSqueezingDetector,
                    "mi": MIScoreDetector}[args.detector]()
        print(f"fitting {type(detector).__name__} on {min(len(x), args.fit_images)} clean {dataset} images ...")
        detector.fit(logits_model, x[:args.fit_images], y[:args.fit_images]).calibrate(x_cal, fpr=args.fpr)
        cal = detector.calibration
        print(f"calibrated threshold {cal['threshold']:.4g} at {100 * cal['fpr_target']:.1f}% target FPR "
              f"({100 * cal['fpr_measured']:.1f}% on {cal['n']} held-out images)")
    elif args.dataset:
        metadata["dataset"] = args.dataset
    try:
        out = export(model, target, detector=detector, metadata=metadata, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    print(f"exported {out} (signatures: serving_default{', detect' if detector else ''})")
    return 0
