"""``keras-advmi query``: send images to a served model (REST or gRPC) and print the JSON answer."""

from __future__ import annotations

import json

import numpy as np

from . import CommandFailed, UsageError
from ._common import dataset_arg, existing_file_arg, load_dataset, positive_int

DEFAULT_URL = {"rest": "http://127.0.0.1:8501", "grpc": "127.0.0.1:8500"}


def add_parser(subparsers):
    p = subparsers.add_parser("query", help="query a served model (predict, detect, status, metadata)",
                              description="Query TF Serving or `keras-advmi serve`. Images come from an .npy/.npz "
                                          "file (float32 in [0, 1]) or the first N test images of --dataset.")
    p.add_argument("model", help="model name")
    p.add_argument("--url", help="REST URL or gRPC host:port (default http://127.0.0.1:8501 for REST, "
                                 "127.0.0.1:8500 for gRPC: TF Serving's ports)")
    p.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    p.add_argument("--action", choices=("predict", "detect", "status", "metadata"), default="predict")
    p.add_argument("--images", type=existing_file_arg, help=".npy or .npz (key x or the first array) with images")
    p.add_argument("--dataset", type=dataset_arg, help="take images from this dataset's test split")
    p.add_argument("-n", type=positive_int, default=4, help="number of images (default 4)")
    p.add_argument("--version", type=int, help="pin a model version")
    p.set_defaults(run=run)
    return p


def _images(args):
    if args.images:
        data = np.load(args.images)
        x = data["x"] if hasattr(data, "files") and "x" in data.files else (
            data[data.files[0]] if hasattr(data, "files") else data)
    else:
        x = load_dataset(args.dataset)[1][0]
    return np.asarray(x[: args.n], dtype=np.float32)


def run(args):
    from ..serving import client as serving_client

    if args.action in ("predict", "detect") and not (args.images or args.dataset):
        raise UsageError("--action predict/detect needs --images FILE or --dataset NAME")
    if args.url is None:
        args.url = DEFAULT_URL[args.protocol]
    client = serving_client.Client(args.url, args.model, protocol=args.protocol, version=args.version)
    try:
        if args.action in ("predict", "detect"):
            out = getattr(client, args.action)(_images(args))
            out = {k: np.asarray(v).tolist() for k, v in out.items()}
        else:
            out = getattr(client, args.action)()
    except serving_client.ServingClientError as exc:
        raise CommandFailed(f"server answered {exc.status}: {exc.message}") from None
    except OSError as exc:
        raise CommandFailed(f"cannot reach {args.url}: {exc}") from None
    finally:
        client.close()
    print(json.dumps(out, indent=1))
    return 0
