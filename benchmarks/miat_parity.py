"""MIAT parity: our Keras estimators and losses against the official PyTorch code, same weights, same batch.

    git clone https://github.com/dwDavidxd/MIAT /tmp/MIAT        # outside this repository; never commit it
    pip install torch==2.13.0                                    # a benchmark dependency only
    python benchmarks/miat_parity.py /tmp/MIAT [--image-size 32] [--batch 32] [--hsize 64] [--json OUT]

From the checkout it builds the official estimator networks (``models/estimator.py: Estimator``, the local
encoder; ``models/discriminators.py: MI1x1ConvNet``, the global one), the official DV score
(``compute_MI.py: compute_loss`` -> ``functions/dim_losses.py: donsker_varadhan_loss``), the official
estimator objectives (``train_MI_estimator.py: MI_loss_nat``, ``MI_loss_adv``) and the official MIAT
losses (``train_MIAT.py: MI_loss``, ``MI_loss_nat``). The loss functions are read from the scripts' source
(``ast``: their module level parses arguments and loads CIFAR-10) and executed with the checkout's own
imports; ``Tensor.cuda`` is made a no-op so they run on a CPU. Ours: ``kam.layers.MIEstimator`` and
``kam.defenses.MIAT`` with ``filters=(64, 128)`` (the official widths), the official weights copied in
(conv kernels transposed to Keras' layout, BatchNorm running statistics set to random values so that the
inference-mode comparison means something).

The batch: random images in [0, 1] (3 channels, as the official Estimator), a target model (flatten ->
dense 64 -> ReLU -> dense 10, the same weights in both frameworks), labels equal to its prediction for
3/4 of the samples, x~ = clip(x + 0.3 sign(noise)) (so that some predictions flip and the selection
"clean-correct, adversarially wrong" is not empty).

Compared, as max |official - ours| (the official code returns losses, -score; we return scores):
- per-sample DV scores of both estimators on the four pairs, in inference mode (``.eval()`` /
  ``training=False``) and training mode (BatchNorm batch statistics), with ``diagonal="zero"`` (the
  official log-sum-exp over a zeroed diagonal); ``diagonal="exclude"`` (our default, the correct DV)
  is listed beside it as the deliberate difference;
- each estimator's training loss (``miat_estimators.pretrain_losses`` vs ``MI_loss_nat`` / ``MI_loss_adv``), training mode;
- the MIAT loss (CE + alpha * MI term) and the MI term alone, both variants, inference-mode estimators.
The selection: the official code takes ``softmax(logits, dim=0)`` (over the *batch*) before the argmax, a
bug; we take the argmax of the logits. Each loss is compared twice: with the official
selection (ours given the official masks) and with the argmax selection (the official functions given a
``softmax`` over dim 0 that is the identity, i.e. the argmax of the logits); the table says how many
samples the two selections disagree on.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import types
from pathlib import Path

import numpy as np

TOL = 1e-4


def load_official(checkout):
    """The official modules and loss functions from a checkout of dwDavidxd/MIAT."""
    import torch
    import torch.nn.functional as F

    checkout = Path(checkout).resolve()
    for name in ("models/estimator.py", "models/discriminators.py", "compute_MI.py", "functions/dim_losses.py",
                 "train_MIAT.py", "train_MI_estimator.py"):
        if not (checkout / name).exists():
            raise SystemExit(f"{checkout} is not a checkout of dwDavidxd/MIAT: {name} is missing")
    sys.path.insert(0, str(checkout))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self      # the official losses call .cuda() on constants
    from compute_MI import compute_loss
    from models.discriminators import MI1x1ConvNet
    from models.estimator import Estimator

    args = types.SimpleNamespace(is_internal=False, is_internal_last=False, va_mode="dv", va_fd_measure="JSD",
                                 print_freq=10 ** 9, batch_size=1)

    def functions(script, names, softmax):
        tree = ast.parse((checkout / script).read_text(encoding="utf-8-sig"))
        module = ast.Module(body=[n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names],
                            type_ignores=[])
        f = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("_")})
        f.softmax = softmax
        namespace = {"torch": torch, "F": f, "compute_loss": compute_loss, "args": args}
        exec(compile(module, str(checkout / script), "exec"), namespace)   # noqa: S102 - the official source
        return {n: namespace[n] for n in names}

    official_softmax = F.softmax

    def argmax_softmax(x, dim=None, **kwargs):     # softmax over dim 0 -> identity: argmax of the logits
        return x if dim == 0 else official_softmax(x, dim=dim, **kwargs)

    losses = {}
    for selection, softmax in (("official", official_softmax), ("argmax", argmax_softmax)):
        losses[selection] = {
            "estimator": functions("train_MI_estimator.py", ("MI_loss_nat", "MI_loss_adv"), softmax),
            "miat": functions("train_MIAT.py", ("MI_loss", "MI_loss_nat"), softmax)}
    return types.SimpleNamespace(Estimator=Estimator, MI1x1ConvNet=MI1x1ConvNet, compute_loss=compute_loss,
                                 args=args, losses=losses)


def _randomize_bn(module, gen):
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
        if isinstance(m, torch.nn.LayerNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)


def _bn(keras_bn, torch_bn):
    keras_bn.gamma.assign(torch_bn.weight.detach().numpy())
    keras_bn.beta.assign(torch_bn.bias.detach().numpy())
    keras_bn.moving_mean.assign(torch_bn.running_mean.numpy())
    keras_bn.moving_variance.assign(torch_bn.running_var.numpy())


def _block(block, nonlinear, shortcut, ln, conv):
    """Our ResidualBlock1x1 <- the official (block_nonlinear, linear_shortcut, block_ln)."""
    def kernel(w):        # (out, in, 1, 1) -> Conv2D (1, 1, in, out) or Dense (in, out)
        w = w.detach().numpy()
        return w.transpose(2, 3, 1, 0) if conv else w[:, :, 0, 0].T

    block.hidden.kernel.assign(kernel(nonlinear[0].weight))
    _bn(block.bn, nonlinear[1])
    block.out.kernel.assign(kernel(nonlinear[3].weight))
    block.out.bias.assign(nonlinear[3].bias.detach().numpy())
    block.shortcut.kernel.assign(kernel(shortcut.weight))
    block.norm.gamma.assign(ln.weight.detach().numpy())
    block.norm.beta.assign(ln.bias.detach().numpy())


def copy_estimator(ours, local_t, global_t):
    """kam.layers.MIEstimator <- official (Estimator, MI1x1ConvNet)."""
    enc = ours.local_encoder
    for conv, bn, layer in zip(enc.convs, enc.bns, (local_t.layer0, local_t.layer1)):
        conv.kernel.assign(layer[0].weight.detach().numpy().transpose(2, 3, 1, 0))
        _bn(bn, layer[1])
    _block(enc.block, local_t.block_nonlinear, local_t.linear_shortcut, local_t.block_ln[1], conv=True)
    g = global_t
    _block(ours.global_encoder.block, g.block_nonlinear, g.linear_shortcut, g.block_ln[1], conv=False)


def run(checkout, image_size=32, batch=32, hsize=64, seed=0):
    import torch

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import keras_advmi as kam
    from keras_advmi.defenses.miat_estimators import pretrain_losses
    from keras_advmi.layers.dim import MIEstimator

    official = load_official(checkout)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size, 3)

    # The target model h, the same weights in both frameworks.
    dense1 = torch.nn.Linear(int(np.prod(shape)), 64)
    dense2 = torch.nn.Linear(64, 10)

    class Target(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense1, self.dense2 = dense1, dense2

        def forward(self, x, *unused):      # NCHW -> NHWC, then flatten as Keras does
            return self.dense2(torch.relu(self.dense1(x.permute(0, 2, 3, 1).reshape(len(x), -1))))

    target_t = Target()
    target_k = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(10)])
    target_k.layers[1].set_weights([dense1.weight.detach().numpy().T, dense1.bias.detach().numpy()])
    target_k.layers[2].set_weights([dense2.weight.detach().numpy().T, dense2.bias.detach().numpy()])

    # The batch.
    x = rng.uniform(0, 1, (batch,) + shape).astype(np.float32)
    x_adv = np.clip(x + 0.3 * np.sign(rng.normal(size=x.shape)), 0, 1).astype(np.float32)
    logits = target_k(x).numpy()
    y = np.where(rng.uniform(size=batch) < 0.75, logits.argmax(1), rng.integers(0, 10, batch)).astype(np.int64)
    to_t = lambda a: torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))   # noqa: E731
    xt, xat, yt = to_t(x), to_t(x_adv), torch.tensor(y)

    # Estimators: official modules (random init, random BN statistics) copied into ours.
    nets_t = {}
    for name in ("natural", "adversarial"):
        local_t, global_t = official.Estimator(hsize), official.MI1x1ConvNet(10, hsize)
        _randomize_bn(local_t, gen)
        _randomize_bn(global_t, gen)
        nets_t[name] = (local_t, global_t)
    initial_state = {name: tuple({k: v.clone() for k, v in m.state_dict().items()} for m in nets)
                     for name, nets in nets_t.items()}
    ours = {}
    for diagonal in ("zero", "exclude"):
        for name in ("natural", "adversarial"):
            est = MIEstimator(hsize, (64, 128), "dv", diagonal)
            est.build((None,) + shape, (None, 10))
            copy_estimator(est, *nets_t[name])
            ours[diagonal, name] = est

    def official_scores(name, train):
        local_t, global_t = nets_t[name]
        for m in (local_t, global_t):
            m.train(train)
        pattern = xt if name == "natural" else xat - xt
        with torch.no_grad():
            return [-official.compute_loss(official.args, pattern, latter, target_t, local_t, global_t, v_out=True).numpy()
                    for latter in (xt, xat)]

    def our_scores(diagonal, name, train):
        pattern = x if name == "natural" else x_adv - x
        return [ours[diagonal, name](tf.constant(pattern), target_k(v), training=train).numpy() for v in (x, x_adv)]

    rows = []

    def add(quantity, official_value, our_value, deliberate=False):
        diff = float(np.max(np.abs(np.asarray(official_value, np.float64) - np.asarray(our_value, np.float64))))
        scale = float(np.max(np.abs(official_value)))
        rows.append({"quantity": quantity, "max_abs_diff": diff, "official_max_abs": scale,
                     "pass": bool(diff <= TOL) if not deliberate else None})

    pair = {("natural", 0): "v_n(x -> h(x))", ("natural", 1): "v_n(x -> h(x~))",
            ("adversarial", 0): "v_a(n -> h(x))", ("adversarial", 1): "v_a(n -> h(x~))"}
    for train in (False, True):
        mode = "training mode" if train else "inference mode"
        for name in ("natural", "adversarial"):
            off = official_scores(name, train)
            mine = our_scores("zero", name, train)
            excl = our_scores("exclude", name, train)
            for k in (0, 1):
                add(f"DV score {pair[name, k]}, {mode}", off[k], mine[k])
            if not train:
                for k in (0, 1):
                    add(f"DV score {pair[name, k]}, {mode}, ours diagonal='exclude' (deliberate)", off[k], excl[k],
                        deliberate=True)

    # BatchNorm's moving variance after the two training-mode passes above (momentum 0.1 from the same
    # statistics): PyTorch updates it with the unbiased batch variance, Keras with the biased one, a factor
    # m/(m-1) on the update, m values per channel (32 for the global encoder's BatchNorm on a batch of 32).
    # Keras' BatchNormalization as it is (deliberate); inference-mode outputs are unaffected until then.
    for name in ("natural", "adversarial"):
        add(f"{name} global encoder: BatchNorm moving variance after 2 training-mode passes (deliberate)",
            nets_t[name][1].block_nonlinear[1].running_var.numpy(),
            ours["zero", name].global_encoder.block.bn.moving_variance.numpy(), deliberate=True)

    # Selections: the official softmax over the batch vs the argmax.
    def masks(selection):
        lc, la = target_k(x).numpy(), target_k(x_adv).numpy()
        if selection == "official":
            soft = lambda v: np.exp(v - v.max(0)) / np.exp(v - v.max(0)).sum(0)   # noqa: E731 - softmax, dim 0
            lc, la = soft(lc), soft(la)
        return (lc.argmax(1) == y).astype(np.float32), (la.argmax(1) == y).astype(np.float32)

    selection_counts = {}
    for sel in ("official", "argmax"):
        ok_c, ok_a = masks(sel)
        selection_counts[sel] = {"clean_correct": int(ok_c.sum()),
                                 "clean_correct_adv_wrong": int((ok_c * (1 - ok_a)).sum()),
                                 "clean_correct_adv_correct": int((ok_c * ok_a).sum())}
    o_c, o_a = masks("official")
    m_c, m_a = masks("argmax")
    disagree = int(np.sum((o_c * (1 - o_a)) != (m_c * (1 - m_a))))

    defense = {}
    for variant in ("both", "natural"):
        d = kam.defenses.MIAT(epsilon=0.3, steps=1, variant=variant,
                              estimators=kam.defenses.MIATEstimators(hsize=hsize, filters=(64, 128), diagonal="zero"),
                              pretraining=kam.defenses.MIATPretraining(required=False))
        d.build(target_k)
        copy_estimator(d.natural, *nets_t["natural"])
        copy_estimator(d.adversarial, *nets_t["adversarial"])
        defense[variant] = d

    # Estimator training losses (training mode, as train_MI_estimator.py runs them).
    for sel in ("official", "argmax"):
        fns = official.losses[sel]["estimator"]
        torch_losses = []
        for fn, name in ((fns["MI_loss_nat"], "natural"), (fns["MI_loss_adv"], "adversarial")):
            local_t, global_t = nets_t[name]
            torch_losses.append(float(fn(0, target_t, xt, yt, xat, local_t, global_t, 0).detach()))
        ok_c, ok_a = masks(sel)
        d = defense["both"]
        lc, la = target_k(x), target_k(x_adv)
        scores = d.estimator_pair.scores(tf.constant(x), tf.constant(x_adv), lc, la, training=True)
        loss_n, loss_a = pretrain_losses(*scores, tf.constant(ok_c), tf.constant(ok_a))
        add(f"natural estimator's training loss ({sel} selection)", torch_losses[0], float(loss_n))
        add(f"adversarial estimator's training loss ({sel} selection)", torch_losses[1], float(loss_a))

    # MIAT losses (estimators in inference mode, as train_MIAT.py runs them), from the initial weights again:
    # the training-mode passes above moved each framework's BatchNorm statistics by its own rule.
    for name, (local_t, global_t) in nets_t.items():
        local_t.load_state_dict(initial_state[name][0])
        global_t.load_state_dict(initial_state[name][1])
        copy_estimator(defense["both"].natural if name == "natural" else defense["both"].adversarial, local_t, global_t)
        copy_estimator(defense["natural"].natural if name == "natural" else defense["natural"].adversarial,
                       local_t, global_t)
    ce = float(torch.nn.functional.cross_entropy(target_t(xat), yt).detach())
    for sel in ("official", "argmax"):
        fns = official.losses[sel]["miat"]
        for m in [m for pair_ in nets_t.values() for m in pair_]:
            m.eval()
        (ln, gn), (la_, ga) = nets_t["natural"], nets_t["adversarial"]
        total = {"both": float(fns["MI_loss"](0, target_t, xt, yt, xat, ln, gn, la_, ga, 0).detach()),
                 "natural": float(fns["MI_loss_nat"](0, target_t, xt, yt, xat, ln, gn, 0).detach())}
        ok_c, ok_a = masks(sel)
        for variant in ("both", "natural"):
            d = defense[variant]
            original = d.objective.select
            d.objective.select = lambda y_, lc_, la_, _c=ok_c, _a=ok_a: tf.constant(_c * (1 - _a))
            try:
                out = d.loss(target_k, tf.constant(x), tf.constant(y), tf.constant(x_adv), training=False)
            finally:
                d.objective.select = original
            ours_total = float(tf.reduce_mean(out.per_sample))
            term = out.logs["mi_loss"]
            ours_term = float((term[0] if isinstance(term, tuple) else term)[0])    # (values, weights) or values
            weight = d.alpha if variant == "both" else 1.0
            label = "MI_loss, alpha 5" if variant == "both" else "MI_loss_nat, variant 'natural'"
            add(f"MIAT loss CE + w * MI term ({label}, {sel} selection)", total[variant], ours_total)
            add(f"MIAT MI term ({label}, {sel} selection)", (total[variant] - ce) / weight, ours_term)
    return {"rows": rows, "selection_counts": selection_counts, "selection_disagreements": disagree,
            "batch": batch, "image_size": image_size, "hsize": hsize, "seed": seed, "tolerance": TOL}


def table(result):
    lines = [f"batch {result['batch']}, images {result['image_size']}x{result['image_size']}x3, hsize "
             f"{result['hsize']}, seed {result['seed']}; selections (clean-correct & adv-wrong): official "
             f"{result['selection_counts']['official']['clean_correct_adv_wrong']}, argmax "
             f"{result['selection_counts']['argmax']['clean_correct_adv_wrong']}, disagreeing on "
             f"{result['selection_disagreements']} samples", "",
             "| quantity | max abs diff | official max abs | within 1e-4 |", "|---|---|---|---|"]
    for r in result["rows"]:
        ok = "deliberate" if r["pass"] is None else ("yes" if r["pass"] else "**NO**")
        lines.append(f"| {r['quantity']} | {r['max_abs_diff']:.2e} | {r['official_max_abs']:.3g} | {ok} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="path of a checkout of github.com/dwDavidxd/MIAT (outside this repository)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hsize", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = run(args.checkout, args.image_size, args.batch, args.hsize, args.seed)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    failed = [r for r in result["rows"] if r["pass"] is False]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
