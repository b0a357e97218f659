"""``keras-advmi evaluate``: the robustness table of a saved model."""

from __future__ import annotations

from pathlib import Path

from ._common import dataset_arg, epsilon_arg, keras_file_arg, load_dataset, load_model, positive_int


def add_parser(subparsers):
    p = subparsers.add_parser("evaluate", help="robust accuracy of a saved model under attacks",
                              description="Accuracy under each attack and epsilon, with a gradient-masking check.")
    p.add_argument("model", type=keras_file_arg, help="a .keras file")
    p.add_argument("--dataset", type=dataset_arg, default="digits",
                   help="digits (default), mnist, fashion_mnist, cifar10 or a .npz file")
    p.add_argument("--attacks", nargs="+", default=["clean", "fgsm", "pgd-20"],
                   help="clean fgsm pgd-K pgd-l2-K cleverhans-pgd-K apgd-ce apgd-dlr autoattack autoattack-standard")
    p.add_argument("--epsilons", nargs="+", type=epsilon_arg, help="default: the dataset's epsilon")
    p.add_argument("--n", type=positive_int, default=1000, help="test images")
    p.add_argument("--restarts", type=positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write robustness.json and robustness.csv here")
    p.set_defaults(run=run)
    return p


def run(args):
    from .. import data
    from ..evaluation import evaluate_robustness

    model = load_model(args.model)
    _, (xt, yt) = load_dataset(args.dataset)
    epsilons = args.epsilons or [data.default_epsilon(args.dataset)]
    report = evaluate_robustness(model, xt[: args.n], yt[: args.n], attacks=args.attacks, epsilons=epsilons,
                                 restarts=args.restarts, seed=args.seed, progress=None)
    print(report)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report.to_json(out / "robustness.json")
        report.to_csv(out / "robustness.csv")
    return 0
