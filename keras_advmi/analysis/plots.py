"""Figures of the analyses as PNG bytes (matplotlib's object API, no pyplot state, no display needed).

Each ``plot_*`` function takes results keyed by a model label (e.g. {"NT": ..., "PGD-AT": ...}) so
that models are compared side by side, returns the PNG as ``bytes`` and, given ``path``, also
writes it there.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .promotion_suppression import TYPES

__all__ = ["plot_information_plane", "plot_texture_shape", "plot_pse_scatter", "plot_grad_cam",
           "plot_robust_accuracy", "plot_fooling_rates", "to_png"]

TYPE_COLORS = {"suppression": "tab:blue", "balanced": "tab:gray", "promotion": "tab:red", "none": "black"}


def to_png(fig, path=None, dpi=90):
    """Render a Figure to PNG bytes (and to ``path`` if given)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def _compact_tick(value, _pos=None):
    """A short tick label at any scale: 0, 0.0004, 12.5, 16000, 2e+05, 2e-07 (never an offset)."""
    if value == 0:
        return "0"
    if 1e3 <= abs(value) < 1e5 and float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 else f"{value:.2g}"


def _readable_ticks(ax, nbins=4):
    """At most ``nbins`` + 1 ticks per axis, compact labels: they stay apart whatever the data's scale."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=nbins))
        axis.set_major_formatter(FuncFormatter(_compact_tick))


def _figure(ncols, nrows=1, width=4.2, height=3.4):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def plot_information_plane(planes, path=None, title=None):
    """One panel per model: per layer, I(T;Y) against I(X;T); clean solid/circles, adversarial
    dashed/crosses; epochs connected in order (one checkpoint: the layers connected in depth order),
    each layer named at its last clean point (placed where it overlaps no other name and no other end
    point, with a thin leader line to its point; ``_spread_labels``).

    Every panel has the same fixed axes, x in [0, log N] and y in [0, H(Y)] (the ceilings of the
    estimates, drawn dotted; the largest over the panels), so models are compared on one scale; ticks
    are plain numbers (no offset). ``planes``: {label: plane} with plane as ``information_plane``
    returns it ("clean", "adv", "layers", "unit", and "log_n" / "h_y" when known).
    """
    labels = list(planes)
    fig, axes = _figure(len(labels), width=4.6, height=3.8)
    unit = next((planes[label].get("unit", "nats") for label in labels), "nats")
    all_points = [pts for label in labels for kind in ("clean", "adv")
                  for pts in (planes[label].get(kind) or {}).values() if len(pts)]
    data_max = np.max([np.max(np.asarray(pts), axis=0) for pts in all_points], axis=0) if all_points else (1.0, 1.0)
    ceilings = (max((planes[label].get("log_n", 0.0) for label in labels), default=0.0),
                max((planes[label].get("h_y", 0.0) for label in labels), default=0.0))
    limits = (1.05 * max(ceilings[0], float(data_max[0]), 1e-9), 1.05 * max(ceilings[1], float(data_max[1]), 1e-9))
    names, ends = {}, {}   # axes -> its layer-name annotations, its large end markers (data x, y)
    for ax, label in zip(axes[0], labels):
        names[ax], ends[ax] = _draw_plane(ax, planes[label])
        _frame_plane(ax, ceilings, limits, unit, title or f"{label}: information plane")
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()   # the constrained layout fixes the axes before labels are measured
    for ax, texts in names.items():
        _spread_labels(ax, texts, ends[ax])
    return to_png(fig, path)


def _draw_plane(ax, plane):
    """One model's curves on ``ax``: per layer and probe kind its points, a large marker at the last one,
    the layer's name at its last clean point. Returns (the name annotations, the end points (x, y))."""
    layers = plane["layers"]
    colors = [f"C{i % 10}" for i in range(len(layers))]
    names, ends = [], []
    single = all(len(plane["clean"][name]) == 1 for name in layers if name in plane["clean"])
    for kind, style, marker in (("clean", "-", "o"), ("adv", "--", "x")):
        points = plane.get(kind) or {}
        if not points:
            continue
        if single:
            path_pts = np.array([points[name][0] for name in layers if name in points])
            ax.plot(path_pts[:, 0], path_pts[:, 1], style, color="0.6", zorder=1)
        for name, color in zip(layers, colors):
            if name in points and len(points[name]):
                pts = np.asarray(points[name])
                ax.plot(pts[:, 0], pts[:, 1], style, marker=marker, ms=4, color=color, zorder=2,
                        label=f"{name} ({kind})")
                ax.plot(pts[-1, 0], pts[-1, 1], marker=marker, ms=8, color=color, zorder=3)
                ends.append(pts[-1])
                if kind == "clean":
                    names.append(ax.annotate(name, (pts[-1, 0], pts[-1, 1]), textcoords="offset points",
                                             xytext=(5, 4), fontsize=7, color=color, zorder=4,
                                             bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.75),
                                             arrowprops=dict(arrowstyle="-", color=color, lw=0.5, shrinkA=0,
                                                             shrinkB=2)))
    return names, ends


def _frame_plane(ax, ceilings, limits, unit, title):
    """Axes of one panel: the ceilings (log N, H(Y); 0 when unknown) dotted, the fixed limits
    [0, x_max] x [0, y_max], plain ticks, labels in ``unit``, the title and the legend."""
    (x_ceiling, y_ceiling), (x_max, y_max) = ceilings, limits
    if x_ceiling:
        ax.axvline(x_ceiling, ls=":", color="k", lw=0.8)
        ax.text(x_ceiling, 0.6 * y_max, "log N ", rotation=90, fontsize=7, va="center", ha="right")
    if y_ceiling:
        ax.axhline(y_ceiling, ls=":", color="k", lw=0.8)
        ax.text(0.02 * x_max, y_ceiling, "H(Y)", fontsize=7, va="bottom")
    ax.set_xlim(0.0, x_max)
    ax.set_ylim(0.0, y_max)
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.set_xlabel(f"I(X;T) [{unit}]")
    ax.set_ylabel(f"I(T;Y) [{unit}]")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="lower right")


def _spread_labels(ax, texts, markers=(), marker_pt=8.0):
    """Place annotation ``texts`` (offset-points annotations) so that no two of them overlap, nor cover
    another point's ``markers`` (data (x, y) of the large end markers, ``marker_pt`` points wide).

    From the highest anchor down, each label takes the first free place among: right of its point,
    above then below, then left, then further above / below in steps of one line; none free: the
    first place right of its point below every placed label. Boxes in display pixels.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = fig.dpi / 72.0   # pixels per point
    half = 0.5 * marker_pt * px
    obstacles = [Bbox.from_extents(x - half, y - half, x + half, y + half)
                 for x, y in (ax.transData.transform(m) for m in markers)]

    def text_box(text):   # the words only (an Annotation's own extent includes its leader line)
        text.update_positions(renderer)
        return Text.get_window_extent(text, renderer)

    def free(box, own):
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        return inside and not any(box.overlaps(b) for b in placed) and not any(
            box.overlaps(b) for b in obstacles if not b.contains(*own))

    placed = []
    for text in sorted(texts, key=lambda t: -ax.transData.transform(t.xy)[1]):
        own = ax.transData.transform(text.xy)
        box = text_box(text)
        width, height = box.width / px, box.height / px
        rows = [4.0, -4.0 - height] + [v for k in range(1, 2 * len(texts) + 2)
                                       for v in (4.0 + k * height, -4.0 - (k + 1) * height)]
        for dy in rows:
            for dx in (5.0, -5.0 - width):
                text.xyann = (dx, dy)
                box = text_box(text)
                if free(box, own):
                    break
            else:
                continue
            break
        else:   # crowded: right of the point, below every placed label
            text.xyann = (5.0, 4.0)
            box = text_box(text)
            low = min((b.y0 for b in placed), default=box.y1)
            text.xyann = (5.0, 4.0 - max(0.0, box.y1 - low + 1.0) / px)
            box = text_box(text)
        placed.append(box)


def plot_texture_shape(probes, path=None):
    """Accuracy vs saturation level p (log axis) and vs patch-shuffle grid k, one line per model."""
    fig, axes = _figure(2)
    for label, probe in probes.items():
        ps = [float(p) for p in probe["saturation"]]
        axes[0, 0].plot(ps, [probe["saturation"][p] for p in probe["saturation"]], "-o", label=label)
        ks = [int(k) for k in probe["patch_shuffle"]]
        axes[0, 1].plot(ks, [probe["patch_shuffle"][k] for k in probe["patch_shuffle"]], "-o", label=label)
    axes[0, 0].set_xscale("log", base=2)
    axes[0, 0].set_xlabel("saturation p (texture removed)")
    axes[0, 1].set_xlabel("patch shuffle k x k (shape removed)")
    for ax in axes[0]:
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    return to_png(fig, path)


def plot_pse_scatter(results, path=None, max_points=500):
    """Rows: models; columns: attacks. Promotion P against suppression S of each successful sample,
    coloured by type; the lines P = S/2 (r = 1/3) and P = 2S (r = 2/3) separate the types."""
    labels = list(results)
    attacks = list(dict.fromkeys(a for label in labels for a in results[label]))
    fig, axes = _figure(len(attacks), len(labels), width=3.6, height=3.2)
    for row, label in enumerate(labels):
        for col, attack in enumerate(attacks):
            ax = axes[row, col]
            res = results[label].get(attack)
            if res is None:
                ax.set_axis_off()
                continue
            mask = np.asarray(res["success"], bool)
            s = np.maximum(np.asarray(res["suppression"])[mask][:max_points], 0)
            p = np.maximum(np.asarray(res["promotion"])[mask][:max_points], 0)
            types = np.asarray(res["type"])[mask][:max_points]
            for name in TYPES:
                sel = types == name
                if sel.any():
                    ax.scatter(s[sel], p[sel], s=6, color=TYPE_COLORS[name], alpha=0.6,
                               label=f"{name} {res['fractions'][name]:.0%}")
            top = max(float(np.max(s, initial=0)), float(np.max(p, initial=0)), 1e-3) * 1.05
            ax.plot([0, top], [0, top / 2], ":", color="k", lw=0.7)
            ax.plot([0, top / 2], [0, top], ":", color="k", lw=0.7)
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            _readable_ticks(ax)
            ax.set_xlabel("suppression S = z_y(x) - z_y(x')")
            ax.set_ylabel("promotion P = z_t(x') - z_t(x)")
            ax.set_title(f"{label}, {attack} (success {res['n_success']}/{res['n']})", fontsize=9)
            ax.legend(fontsize=7, markerscale=2)
    return to_png(fig, path)


def plot_grad_cam(samples, path=None):
    """Grad-CAM overlays. ``samples`` = {label: {"x": (n,H,W,C), "x_adv", "y": (n,), "t": (n,),
    "cam_x_y", "cam_x_t", "cam_adv_y", "cam_adv_t": (n, H, W)}}; one row per (model, image): x, x',
    and the maps of the true class y and the adversarial class t on x and on x'."""
    rows = [(label, i) for label, s in samples.items() for i in range(len(s["x"]))]
    fig, axes = _figure(6, len(rows), width=1.6, height=1.7)
    titles = ["x", "x'", "CAM y on x", "CAM t on x", "CAM y on x'", "CAM t on x'"]
    for r, (label, i) in enumerate(rows):
        s = samples[label]
        img, adv = s["x"][i], s["x_adv"][i]
        gray = img.shape[-1] == 1
        panels = [(img, None), (adv, None), (img, s["cam_x_y"][i]), (img, s["cam_x_t"][i]),
                  (adv, s["cam_adv_y"][i]), (adv, s["cam_adv_t"][i])]
        for c, (base, cam) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(base[..., 0] if gray else base, cmap="gray" if gray else None, vmin=0, vmax=1)
            if cam is not None:
                ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            title = titles[c] if r == 0 else ""
            if c == 0:
                title = f"{label}: y={int(s['y'][i])}, t={int(s['t'][i])}" + (f"\n{title}" if title else "")
            ax.set_title(title, fontsize=7)
    return to_png(fig, path)


def plot_robust_accuracy(curves, path=None):
    """Robust accuracy against epsilon, one line per (model, attack): curves = {label: {attack: {eps: acc}}}."""
    fig, axes = _figure(1, width=5.0)
    ax = axes[0, 0]
    for label, by_attack in curves.items():
        for attack, points in by_attack.items():
            eps = sorted(float(e) for e in points)
            ax.plot(eps, [points[e] if e in points else points[str(e)] for e in eps], "-o", label=f"{label} {attack}")
    ax.set_xlabel("epsilon (L-inf, pixel scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig, path)


def plot_fooling_rates(fragility, path=None):
    """Fooling rate of the targeted universal perturbation of each target class, bars per model."""
    fig, axes = _figure(1, width=5.5)
    ax = axes[0, 0]
    labels = list(fragility)
    width = 0.8 / max(len(labels), 1)
    for j, label in enumerate(labels):
        res = fragility[label]
        targets = np.asarray(res["targets"])
        ax.bar(targets + (j - (len(labels) - 1) / 2) * width, res["fooling_rate"], width,
               label=f"{label} (mean {res['mean']:.2f})")
    ax.set_xlabel("target class t")
    ax.set_ylabel(f"fooling rate (eps {fragility[labels[0]]['epsilon']:g})" if labels else "fooling rate")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return to_png(fig, path)
