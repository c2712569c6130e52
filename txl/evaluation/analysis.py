"""Analyses of a trained model's memory: per-layer sensitivity and where each layer looks (the context ablation is
txl.evaluation.context_ablation's).

Sensitivity: cut one layer's memory at a time (to nothing, and to a short length), keep
the others as trained, and measure how much the loss rises over the model as trained, on
the same text. Each rise carries a paired bootstrap interval over evaluation blocks (the
same model and text on both sides, so only the data's noise enters; see txl.core.stats).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import textwrap
from pathlib import Path

import numpy as np
import torch

from txl.core.io import atomic_write_json, atomic_write_text, pyplot, save_figure
from txl.core.stats import bootstrap_difference, holm
from txl.core.table import render_table
from txl.data import Corpus
from txl.evaluation.evaluate import EvalResult, EvalSpec, evaluate, metric_name
from txl.model.plans import MemoryPlan
from txl.model.transformer import TransformerXL

log = logging.getLogger(__name__)


def layer_sensitivity(
    model: TransformerXL,
    corpus: Corpus,
    spec: EvalSpec,
    short: int | None = None,
    progress: bool = False,
) -> tuple[EvalResult, list[dict]]:
    """The model as trained, then one row per (layer, cut length) with the loss rise and its interval."""
    trained = list(model.cfg.mem_lens)
    short = max(1, max(trained) // 8) if short is None else short
    base = evaluate(model, corpus, spec, None, progress)
    rows = []
    for layer, mem in enumerate(trained):
        for length in sorted({0, short}):
            if length >= mem:
                continue  # not a cut
            lens = list(trained)
            lens[layer] = length
            log.info(f"layer {layer}: memory {mem} -> {length}")
            out = evaluate(model, corpus, spec, MemoryPlan.of_lists(f"layer {layer} at {length}", lens), progress)
            rise = bootstrap_difference(out.blocks, base.blocks, resamples=4000)
            rows.append(
                {
                    "layer": layer,
                    "trained_mem": mem,
                    "mem_len": length,
                    "loss": out.loss,
                    "rise": rise.mean,
                    "rise_lo": rise.lo,
                    "rise_hi": rise.hi,
                    "p": rise.p,
                }
            )
    # every cut is tested at once: a cut is beyond the noise when its p-value survives Holm's adjustment
    # (a cut that raises the loss of every block by the same amount has no spread to test: p None, not tested)
    tested = [r for r in rows if r["p"] is not None]
    for row in rows:
        row.update(p_holm=None, beyond_noise=False)
    for row, adjusted in zip(tested, holm([r["p"] for r in tested])):
        row.update(p_holm=adjusted, beyond_noise=adjusted < 0.05)
    return base, rows


def sensitivity_table(rows: list[dict], fmt: str = "text") -> str:
    headers = [
        "layer",
        "trained memory",
        "cut to",
        "loss (nats)",
        "rise (nats)",
        "95% interval (blocks)",
        "p (Holm)",
        "beyond noise (Holm)",
    ]
    table = [
        [
            r["layer"],
            r["trained_mem"],
            r["mem_len"],
            r["loss"],
            f"{r['rise']:+.4f}",
            f"[{r['rise_lo']:+.4f}, {r['rise_hi']:+.4f}]",
            r.get("p_holm"),
            "no spread" if r["p"] is None else ("yes" if r["beyond_noise"] else "no"),
        ]
        for r in rows
    ]
    return render_table(headers, table, fmt)


def write_sensitivity(base: EvalResult, rows: list[dict], corpus: Corpus, out_dir: Path, title: str) -> dict[str, Path]:
    """sensitivity.json, .md and a bar chart of the loss rise by layer (one bar per cut length, with intervals)."""
    files = {
        "json": out_dir / "sensitivity.json",
        "markdown": out_dir / "sensitivity.md",
        "png": out_dir / "sensitivity.png",
    }
    atomic_write_json(
        files["json"], {"title": title, "metric": metric_name(corpus), "base_loss": base.loss, "rows": rows}
    )
    atomic_write_text(
        files["markdown"],
        f"# {title}\n\nas trained: loss {base.loss:.4f} nats/token\n\n" + sensitivity_table(rows, "markdown") + "\n",
    )
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lengths = sorted({r["mem_len"] for r in rows})
    width = 0.8 / max(1, len(lengths))
    for n, length in enumerate(lengths):
        sel = [r for r in rows if r["mem_len"] == length]
        xs = [r["layer"] + (n - (len(lengths) - 1) / 2) * width for r in sel]
        err = [[r["rise"] - r["rise_lo"] for r in sel], [r["rise_hi"] - r["rise"] for r in sel]]
        ax.bar(xs, [r["rise"] for r in sel], width, yerr=err, capsize=3, label=f"memory cut to {length}", color=f"C{n}")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xlabel("layer (0 = bottom)")
    ax.set_xticks(sorted({r["layer"] for r in rows}))  # whole layers, never fractional ticks
    ax.set_ylabel("loss rise over the model as trained (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, files["png"])
    return files


# --------------------------------------------------------------------------- context ablation


# --------------------------------------------------------------------------- where each layer looks


def distance_edges(longest: int) -> list[float]:
    """Log-spaced distance buckets [0, 1), [1, 2), [2, 4), ... up to `longest`, the last one open."""
    edges = [0, 1]
    while edges[-1] <= longest:
        edges.append(edges[-1] * 2)
    return [*edges[:-1], math.inf]


class AttentionMass:
    """Attention probability mass per layer, head and distance bucket, summed while the model evaluates.

    A probe on the plain path's softmax: nothing is stored but the sums, whatever the length.
    Layers whose variant has no attention probabilities (linear attention) never report; with
    FastRPB the W V term is not part of the probabilities and is not counted.
    """

    def __init__(self, model: TransformerXL, edges: list[float], beyond: tuple[int, ...] = (16, 64, 256)):
        self.layer = {id(block.attn): i for i, block in enumerate(model.layers)}
        n, h = len(model.layers), model.cfg.n_head
        self.edges, self.beyond = edges, beyond
        self.bounds = torch.tensor(edges[1:-1], dtype=torch.float64)
        self.mass = torch.zeros(n, h, len(edges) - 1, dtype=torch.float64)
        self.distance = torch.zeros(n, h, dtype=torch.float64)
        self.memory = torch.zeros(n, h, dtype=torch.float64)
        self.far = torch.zeros(len(beyond), n, h, dtype=torch.float64)
        self.queries = torch.zeros(n, dtype=torch.float64)

    def __call__(self, attn, probs: torch.Tensor) -> None:
        i = self.layer[id(attn)]
        b, h, q, k = probs.shape
        p = probs.detach().double().sum(0).cpu()  # (H, Q, K)
        d = (
            (k - q + torch.arange(q)[:, None] - torch.arange(k)[None, :]).clamp(min=0).double()
        )  # future keys have p = 0
        bucket = torch.bucketize(d, self.bounds, right=True).flatten()
        self.mass[i].index_add_(1, bucket, p.reshape(h, -1))
        self.distance[i] += (p * d).sum((1, 2))
        self.memory[i] += p[:, :, : k - q].sum((1, 2))
        for n, limit in enumerate(self.beyond):
            self.far[n, i] += (p * (d > limit)).sum((1, 2))
        self.queries[i] += b * q

    def result(self) -> dict:
        """Per layer and head: mass per bucket, mean attended distance, fraction in memory and beyond each k."""
        per = self.queries.clamp(min=1)[:, None]
        seen = (self.queries > 0).tolist()
        return {
            "edges": [e if math.isfinite(e) else None for e in self.edges],
            "layers_with_probabilities": [i for i, s in enumerate(seen) if s],
            "mass": (self.mass / per[..., None]).tolist(),
            "mean_distance": (self.distance / per).tolist(),
            "in_memory": (self.memory / per).tolist(),
            "beyond": {str(k): (self.far[n] / per).tolist() for n, k in enumerate(self.beyond)},
        }


def attention_mass(model: TransformerXL, corpus: Corpus, spec: EvalSpec, progress: bool = False) -> dict:
    """Where each layer looks, over an evaluation: on the plain path (the fast ones give the same outputs, tested,
    but never form the probabilities)."""
    edges = distance_edges(max(model.cfg.mem_lens) + spec.tgt_len)
    probe = AttentionMass(model, edges)
    own = model.cfg
    model.cfg, model.probe = dataclasses.replace(own, attn_impl="plain"), probe  # a copy: own is left as it is
    try:
        out = evaluate(model, corpus, spec, None, progress)
    finally:
        model.cfg, model.probe = own, None
    return {**probe.result(), "loss": out.loss, "tokens": out.tokens}


def attention_table(result: dict, model_cfg, fmt: str = "text") -> str:
    """One row per layer (heads averaged): its variant, mean distance, mass in memory and beyond k tokens."""
    headers = ["layer", "attention", "memory", "mean distance", "in memory", *[f"beyond {k}" for k in result["beyond"]]]
    rows = []
    for i, layer in enumerate(model_cfg.layers):
        if i not in result["layers_with_probabilities"]:
            rows.append(
                [
                    i,
                    layer.label,
                    layer.mem_len,
                    "skipped: no attention probabilities (linear attention)",
                    None,
                    *[None for _ in result["beyond"]],
                ]
            )
            continue
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        rows.append(
            [
                i,
                layer.label,
                layer.mem_len,
                mean(result["mean_distance"][i]),
                mean(result["in_memory"][i]),
                *[mean(v[i]) for v in result["beyond"].values()],
            ]
        )
    return render_table(headers, rows, fmt)


def plot_attention(result: dict, path: Path, title: str) -> None:
    """A heat map: layers (rows, bottom layer at the bottom) by distance bucket, mass averaged over heads."""
    plt = pyplot()

    mass = np.array(result["mass"]).mean(1)  # (layers, buckets)
    edges = result["edges"]
    labels = [f"{int(a)}" if b is None or b - a == 1 else f"{int(a)}-{int(b) - 1}" for a, b in zip(edges, edges[1:])]
    labels[-1] = f"{int(edges[-2])}+"
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(mass) + 1.8))
    im = ax.imshow(mass, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
    ax.set_yticks(range(len(mass)))
    ax.set_xlabel("query-key distance (tokens)")
    ax.set_ylabel("layer")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=8)
    fig.colorbar(im, ax=ax, label="attention mass (heads averaged)")
    fig.tight_layout()
    save_figure(fig, path)


def image_to_tensorboard(png: Path, logdir: Path, tag: str) -> Path:
    """Put a saved figure into TensorBoard's Images tab (logdir: a run's tb/ folder, beside its training curves)."""
    import matplotlib.image as mpimg
    from torch.utils.tensorboard import SummaryWriter

    image = mpimg.imread(str(png))[..., :3]
    writer = SummaryWriter(str(logdir))
    try:
        writer.add_image(tag, image, dataformats="HWC")
    finally:
        writer.close()
    return logdir
