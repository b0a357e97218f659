"""``keras-advmi analyze``: the analysis report of a saved model, or of two side by side (NT vs AT)."""

from __future__ import annotations

import json
from pathlib import Path

from . import UsageError
from ._common import (dataset_arg, epsilon_arg, keras_file_arg, load_dataset, load_model, positive_float,
                      positive_int)

#: ``keras_advmi.analysis.report.ANALYSES``, spelled out so that the parser builds without TensorFlow; a
#: test keeps the two equal.
ANALYSES = ("texture_shape", "pse", "grad_cam", "robustness", "universal", "information_plane")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "analyze", help="HTML report: texture/shape, promotion/suppression, Grad-CAM, fragility, information plane",
        description="Write OUT/index.html (self-contained, figures embedded) and OUT/results.json (every number "
                    "in the figures) for MODEL, side by side with --compare MODEL2.")
    p.add_argument("model", type=keras_file_arg, help="a .keras file")
    p.add_argument("--compare", type=keras_file_arg, metavar="MODEL2",
                   help="a second .keras file shown side by side")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="names of the models in the report (default: file names)")
    p.add_argument("--dataset", type=dataset_arg, default="digits",
                   help="digits, mnist, fashion_mnist, cifar10 or a .npz file")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--n", type=positive_int, default=1000, help="test images (default 1000)")
    p.add_argument("--epsilon", type=epsilon_arg, help="L-inf budget (default: the dataset's)")
    p.add_argument("--pgd-steps", type=positive_int, default=20)
    p.add_argument("--universal-steps", type=positive_int, default=40)
    p.add_argument("--layer", help="layer of the neuron-level promotion/suppression (default: last conv layer)")
    p.add_argument("--cam-layer", help="Grad-CAM layer (default: the last conv layer)")
    p.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES), metavar="NAME",
                   help=f"subset of: {' '.join(ANALYSES)}")
    p.add_argument("--history", nargs="+", metavar="JSON",
                   help="per-epoch information planes, one file per model: the mi_history.json a "
                        "MutualInformationLogger writes, or {'clean': {layer: [[I_XT, I_TY], ...]}, 'adv': ...}")
    p.add_argument("--noise-var", type=_noise_var, default="relative",
                   help="KDE noise variance of the information plane: 'relative' (default; 0.1 x each layer's "
                        "median squared pairwise distance, scale-aware) or an absolute number (0.1 is the value of "
                        "\"Exploring adversarial examples and adversarial robustness of CNNs by mutual "
                        "information\", 2022)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
    return p


def _check_layers(label, model, names):
    from .._model import network_of

    available = [layer.name for layer in getattr(network_of(model), "layers", [])]
    for option, name in names:
        if name is not None and name not in available:
            raise UsageError(f"{option} {name!r} is not a layer of {label} (available: {', '.join(available)})")


def _noise_var(text):
    return text if text == "relative" else positive_float(text)


def run(args):
    from .. import data
    from ..analysis.report import analyze, write_report

    paths = [args.model] + ([args.compare] if args.compare else [])
    labels = args.labels or [Path(p).stem for p in paths]
    if len(labels) != len(paths):
        raise UsageError(f"--labels needs {len(paths)} names (one per model), got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise UsageError(f"--labels must be distinct, got {labels}")
    if args.history and len(args.history) != len(paths):
        raise UsageError(f"--history needs {len(paths)} files (one per model), got {len(args.history)}")
    models = {}
    for label, path in zip(labels, paths):
        models[label] = load_model(path)
        _check_layers(label, models[label], [("--layer", args.layer), ("--cam-layer", args.cam_layer)])
    histories = {}
    for label, path in zip(labels, args.history or []):
        try:
            histories[label] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--history {path!r}: {exc}") from None
    _, (xt, yt) = load_dataset(args.dataset)
    xt, yt = xt[: args.n], yt[: args.n]
    epsilon = args.epsilon if args.epsilon is not None else data.default_epsilon(args.dataset)
    if epsilon <= 0:
        raise UsageError("--epsilon must be > 0 for an analysis of adversarial examples")
    results, figures = analyze(models, xt, yt, epsilon, analyses=args.analyses, pgd_steps=args.pgd_steps,
                               universal_steps=args.universal_steps, layer=args.layer, cam_layer=args.cam_layer,
                               histories=histories, noise_var=args.noise_var, seed=args.seed,
                               progress=True)
    results["config"].update({"dataset": args.dataset, "models": dict(zip(labels, paths))})
    index = write_report(args.out, results, figures, title=f"keras-advmi analysis: {' vs '.join(labels)}")
    print(f"report: {index}")
    return 0
