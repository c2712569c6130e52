"""Analyses of a trained model's memory. Built so far: per-layer memory sensitivity.

Sensitivity: cut one layer's memory at a time (to nothing, and to a short length), keep
the others as trained, and measure how much the loss rises over the model as trained, on
the same text. Each rise carries a paired bootstrap interval over evaluation blocks (the
same model and text on both sides, so only the data's noise enters; see txl.stats).
"""

from __future__ import annotations

from pathlib import Path

from txl.data import Corpus
from txl.evaluate import Plan, evaluate, metric_name
from txl.io import atomic_path, atomic_write_json, atomic_write_text
from txl.model import TransformerXL
from txl.stats import bootstrap_difference
from txl.table import render_table


def layer_sensitivity(
    model: TransformerXL, corpus: Corpus, split: str, tgt_len: int, batch_size: int, max_segments: int | None,
    precision: str = "fp32", short: int | None = None, progress: bool = False, say=lambda s: None,
) -> tuple[dict, list[dict]]:
    """The model as trained, then one row per (layer, cut length) with the loss rise and its interval."""
    trained = list(model.cfg.mem_lens)
    short = max(1, max(trained) // 8) if short is None else short
    base = evaluate(model, corpus, split, tgt_len, batch_size, max_segments, precision, progress)
    rows = []
    for layer, mem in enumerate(trained):
        for length in sorted({0, short}):
            if length >= mem:
                continue  # not a cut
            lens = list(trained)
            lens[layer] = length
            say(f"layer {layer}: memory {mem} -> {length}")
            out = evaluate(model, corpus, split, tgt_len, batch_size, max_segments, precision, progress,
                           Plan(f"layer {layer} at {length}", mem_lens=lens))
            rise = bootstrap_difference(out["blocks"], base["blocks"])
            rows.append({"layer": layer, "trained_mem": mem, "mem_len": length, "loss": out["loss"],
                         "rise": rise.mean, "rise_lo": rise.lo, "rise_hi": rise.hi, "beyond_noise": rise.excludes_zero})
    return base, rows


def sensitivity_table(rows: list[dict], fmt: str = "text") -> str:
    headers = ["layer", "trained memory", "cut to", "loss (nats)", "rise (nats)", "95% interval (blocks)", "beyond noise"]
    table = [[r["layer"], r["trained_mem"], r["mem_len"], r["loss"], f"{r['rise']:+.4f}",
              f"[{r['rise_lo']:+.4f}, {r['rise_hi']:+.4f}]", "yes" if r["beyond_noise"] else "no"] for r in rows]
    return render_table(headers, table, fmt)


def write_sensitivity(base: dict, rows: list[dict], corpus: Corpus, out_dir: Path, title: str) -> dict[str, Path]:
    """sensitivity.json, .md and a bar chart of the loss rise by layer (one bar per cut length, with intervals)."""
    files = {"json": out_dir / "sensitivity.json", "markdown": out_dir / "sensitivity.md", "png": out_dir / "sensitivity.png"}
    atomic_write_json(files["json"], {"title": title, "metric": metric_name(corpus), "base_loss": base["loss"], "rows": rows})
    atomic_write_text(files["markdown"], f"# {title}\n\nas trained: loss {base['loss']:.4f} nats/token\n\n"
                      + sensitivity_table(rows, "markdown") + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_ylabel("loss rise over the model as trained (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with atomic_path(files["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return files
