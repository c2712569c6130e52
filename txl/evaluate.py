"""Evaluation with any memory plan: loss, bits or perplexity, and loss by position within the segment."""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch

from txl.budget import budget
from txl.config import ModelConfig, RunConfig
from txl.data import Corpus
from txl.memory import MEMORY, RANGE, parse_plan
from txl.model import TransformerXL
from txl.table import render_table

LN2 = math.log(2)
MAX_BLOCKS = 100  # evaluation blocks kept per result, for the paired bootstrap (txl.stats)
SERIES = ("loss_by_position", "blocks")  # per-position and per-block lists in a result, beside its scalars


def metric_name(corpus: Corpus) -> str:
    """The headline number people compare: bits per byte/char, perplexity, or accuracy on a synthetic task."""
    if corpus.task is not None:
        return "accuracy"
    return {"byte": "bpb", "char": "bpc"}.get(corpus.unit, "ppl")


def quality(loss: float, corpus: Corpus, split: str) -> dict:
    """Loss in nats per token, expressed in the corpus's units."""
    out = {"loss": loss, "bits_per_token": loss / LN2}
    if corpus.task is None:
        out["bpb"] = loss / LN2 / corpus.bytes_per_token(split)  # bits per raw byte, comparable across tokenizers
        if corpus.unit == "char":
            out["bpc"] = loss / LN2
        if corpus.unit in ("word", "piece", "token"):
            out["ppl"] = math.exp(min(loss, 700))
    return out


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


@dataclass
class Plan:
    """An evaluation-time memory plan; None fields (and clamp_len "keep") keep the model's own."""

    name: str
    mem_lens: list[int] | None = None
    attn_ranges: list[int | None] | None = None
    same_length: bool | None = None
    clamp_len: int | None | str = "keep"

    @classmethod
    def parse(
        cls, name: str, n_layer: int, memory: str | None = None, attn_range: str | None = None,
        same_length: bool | None = None, clamp_len: int | None | str = "keep",
    ) -> "Plan":
        return cls(
            name,
            parse_plan(memory, n_layer, MEMORY) if memory is not None else None,  # '' is an empty plan, an error
            parse_plan(attn_range, n_layer, RANGE) if attn_range is not None else None,
            same_length,
            clamp_len,
        )

    @classmethod
    def of_run(cls, run: RunConfig) -> "Plan":
        """The evaluation settings of run.eval (the original evaluates with a longer memory than it trains with)."""
        e = run.eval
        return cls.parse("eval", run.model.n_layer, e.memory, e.attn_range, e.same_length,
                         e.clamp_len if e.clamp_len is not None else "keep")

    def kwargs(self) -> dict:
        return {"mem_lens": self.mem_lens, "attn_ranges": self.attn_ranges, "same_length": self.same_length, "clamp_len": self.clamp_len}

    def config(self, cfg: ModelConfig) -> ModelConfig:
        """The model config as this plan leaves it: what a budget of the evaluation should count."""
        out = copy.deepcopy(cfg)
        for i, layer in enumerate(out.layers):
            if self.mem_lens is not None:
                layer.mem_len = self.mem_lens[i]
            if self.attn_ranges is not None:
                layer.attn_range = self.attn_ranges[i]
        if self.same_length is not None:
            out.same_length = self.same_length
        if self.clamp_len != "keep":
            out.clamp_len = self.clamp_len
        return out


@torch.no_grad()
def evaluate(
    model: TransformerXL,
    corpus: Corpus,
    split: str = "valid",
    tgt_len: int = 128,
    batch_size: int = 10,
    max_segments: int | None = None,
    precision: str = "fp32",
    progress: bool = False,
    plan: Plan | None = None,
) -> dict:
    """Run the split in order with memory carried across segments; return loss, metrics and loss by position."""
    device = next(model.parameters()).device
    batch_size = max(1, min(batch_size, len(corpus.splits[split]) // (2 * tgt_len) or 1))
    stream = corpus.stream(split, batch_size, tgt_len, device=device)
    n_segments = len(stream) if max_segments is None else min(max_segments, len(stream))
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(tgt_len, dtype=torch.float64, device=device)
    count = torch.zeros(tgt_len, dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seg_loss = torch.zeros(n_segments, batch_size, dtype=torch.float64, device=device)  # per segment and stream
    seg_count = torch.zeros(n_segments, batch_size, dtype=torch.float64, device=device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_segments, desc=f"eval {split}" + (f" [{plan.name}]" if plan else ""), unit="seg", file=sys.stderr, leave=False)
    scope = model.memory_plan(**plan.kwargs()) if plan is not None else contextlib.nullcontext()
    try:
        with scope:
            mems = None
            for seg in stream.epoch(0):
                if seg.index >= n_segments:
                    break
                with autocast(device, precision):
                    if corpus.task is not None:
                        logp, mems = model(seg.inputs, mems)
                        nll = -logp.float().gather(-1, seg.targets[..., None]).squeeze(-1)
                        hits = (logp.argmax(-1) == seg.targets).double()
                    else:
                        nll, mems = model(seg.inputs, mems, seg.targets)
                        hits = None
                weight = seg.mask.double() if seg.mask is not None else torch.ones_like(nll, dtype=torch.float64)
                n = nll.size(1)
                scored = nll.double() * weight
                loss_sum[:n] += scored.sum(0)
                count[:n] += weight.sum(0)
                seg_loss[seg.index] = scored.sum(1)
                seg_count[seg.index] = weight.sum(1)
                if hits is not None:
                    correct += (hits * weight).sum()
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    total = float(count.sum())
    loss = float(loss_sum.sum()) / max(total, 1.0)
    out = quality(loss, corpus, split)
    out.update(
        split=split,
        tokens=int(total),
        segments=n_segments,
        tgt_len=tgt_len,
        loss_by_position=(loss_sum / count.clamp(min=1)).tolist(),
        blocks=blocks(seg_loss, seg_count),
    )
    if corpus.task is not None:
        out["accuracy"] = float(correct) / max(total, 1.0)
    return out


def blocks(seg_loss: torch.Tensor, seg_count: torch.Tensor, most: int = MAX_BLOCKS) -> dict:
    """Loss sums and token counts over contiguous blocks of text: runs of segments within one stream.

    Tokens within a block are correlated, blocks much less so: they are the unit a
    bootstrap resamples. The layout depends only on the split, segment length, batch and
    segment count, so two plans evaluated alike have blocks that pair up.
    """
    n_segments, streams = seg_loss.shape
    per_stream = max(1, min(n_segments, most // streams))
    edges = np.linspace(0, n_segments, per_stream + 1).astype(int)
    sums, counts = seg_loss.cpu().numpy(), seg_count.cpu().numpy()  # one copy from the device, not one per block
    loss = [float(sums[a:z, b].sum()) for b in range(streams) for a, z in zip(edges, edges[1:])]
    tokens = [float(counts[a:z, b].sum()) for b in range(streams) for a, z in zip(edges, edges[1:])]
    return {"loss": loss, "tokens": tokens}


def scalars(result: dict) -> dict:
    """A result without its per-position and per-block lists: what a log row or a table holds."""
    return {k: v for k, v in result.items() if k not in SERIES}


def position_buckets(loss_by_position: list[float], buckets: int = 8) -> list[tuple[str, float]]:
    """Average loss over equal runs of in-segment positions: how loss falls as context within the segment grows."""
    arr = np.asarray(loss_by_position)
    edges = np.linspace(0, len(arr), min(buckets, len(arr)) + 1).astype(int)
    return [(f"{a}-{b - 1}", float(arr[a:b].mean())) for a, b in zip(edges, edges[1:]) if b > a]


def evaluate_plans(
    model: TransformerXL, corpus: Corpus, plans: list[Plan], split: str, tgt_len: int, batch_size: int,
    max_segments: int | None, precision: str, progress: bool = False,
) -> list[dict]:
    """Evaluate one model under each plan; each result carries its plan's budget beside its quality."""
    results = []
    for plan in plans:
        out = evaluate(model, corpus, split, tgt_len, batch_size, max_segments, precision, progress, plan)
        b = budget(plan.config(model.cfg), tgt_len)
        out.update(plan=plan.name, cached_positions=b.cached_positions, memory_mib=b.bytes / 2**20,
                   receptive_field=b.receptive_field[0])
        results.append(out)
    return results


def plans_tables(results: list[dict], metric: str, fmt: str = "text") -> str:
    """Quality and budget per plan, then (as text or Markdown) loss by position within the segment per plan.

    The receptive field is the guaranteed one: what every position of a segment sees at least.
    """
    rows = [[r["plan"], r["cached_positions"], r["memory_mib"], _whole(r["receptive_field"]), r.get(metric, r["loss"]), r["loss"], r["tokens"]]
            for r in results]
    first = render_table(["memory plan", "cached", "MiB/seq", "receptive field (guaranteed)", metric, "loss (nats)", "tokens"], rows, fmt)
    if fmt not in ("text", "markdown"):
        return first
    buckets = [position_buckets(r["loss_by_position"]) for r in results]
    rows = [[r["plan"]] + [v for _, v in b] for r, b in zip(results, buckets)]
    second = render_table(["memory plan"] + [name for name, _ in buckets[0]], rows, fmt)
    return f"{first}\n\nloss by position within the segment (more context to the right):\n{second}"


def _whole(x: float) -> float | int:
    return int(x) if math.isfinite(x) and x == int(x) else x
