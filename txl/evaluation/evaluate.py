"""Evaluation with any memory plan: loss, bits or perplexity, and loss by position within the segment."""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from txl.config import RunConfig
from txl.config.domains import DOMAINS
from txl.config.sections import EvalConfig
from txl.core.devices import pick_precision
from txl.core.errors import TxlError
from txl.core.table import render_table, whole
from txl.data import Corpus
from txl.evaluation.protocols import Protocol, get_protocol
from txl.model.budget import budget
from txl.model.dimensions import at_eval, optional
from txl.model.plans import KEEP, MemoryPlan
from txl.model.transformer import TransformerXL
from txl.plan.language import parse_plan

LN2 = math.log(2)
MAX_BLOCKS = 100  # evaluation blocks kept per result, for the paired bootstrap (txl.core.stats)
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


@dataclass(frozen=True)
class EvalSpec:
    """What an evaluation is, besides the model and the plan: which text, in what segments, how many, how precise.

    `plan` is the evaluation's own memory plan (the run's eval section, a protocol's, flags'): what `txl eval`
    scores when no --memory is given, and what every other plan keeps beside its memory lengths.
    Build one with `for_run`, the one place that decides which setting wins."""

    split: str = "valid"
    tgt_len: int = 128
    batch_size: int = 10
    max_segments: int | None = None
    precision: str = "fp32"
    plan: MemoryPlan = field(default_factory=lambda: MemoryPlan("eval"))
    memory: str | None = None  # the plan's memory as written (None: as trained), which names it in tables
    named: dict[str, str] = field(default_factory=dict)  # the plan's other dimensions as written (naming()), when given
    n_layer: int = 0  # the model's, to read plans written in the plan language
    protocol: Protocol | None = None
    corpus: str | None = None  # another corpus than the run's, read with the run's tokenizer
    tokenizer: str | None = None  # with corpus: the tokenizer file, for a model saved without one

    @classmethod
    def for_run(
        cls,
        run: RunConfig,
        device: torch.device | None = None,
        protocol: str | None = None,
        *,
        whole_split: bool = False,
        **flags,
    ) -> EvalSpec:
        """The evaluation of a trained run: flags given win over the protocol, which wins over the run's eval
        section, which wins over its training (the segment length). Flags are EvalSpec's and EvalConfig's
        names (split, tgt_len, batch_size, max_segments, memory, attn_range, same_length, clamp_len, memory_dtype,
        sinks, compress, corpus, tokenizer); None means not given. Numbers are checked against the config's own domains.
        `whole_split`: without a max_segments flag, score the whole split (txl eval), not eval.max_segments.
        With another `corpus` and no `split`, the split is `whole`: the text's three parts in order, the whole file.
        Without a `device` the precision is left as the run names it (auto stays auto)."""
        unknown = set(flags) - set(eval_flags())
        if unknown:
            raise TypeError(f"unknown evaluation settings {sorted(unknown)}")
        given = {k: v for k, v in flags.items() if v is not None}
        check_flags(given)
        proto = get_protocol(protocol) if protocol else None
        e = {f: getattr(run.eval, f) for f in eval_flags() if hasattr(run.eval, f)}
        if whole_split:
            e["max_segments"] = None
        if proto is not None:
            e.update(split=proto.split, tgt_len=proto.tgt_len, memory=str(proto.mem_len), clamp_len=proto.clamp_len)
            e.update(same_length=proto.same_length, batch_size=proto.batch_size)
        if given.get("corpus") and "split" not in given:
            e["split"] = "whole"  # another text is scored whole, not the share a split of it would hold
        e.update(given)
        n = run.model.n_layer
        named = {f: e[f] for f in naming() if e.get(f) is not None}
        clamp = KEEP if e["clamp_len"] is None else e["clamp_len"]
        plan = MemoryPlan.parse(
            n, "eval", e["same_length"], clamp, memory=e["memory"], attn_range=e["attn_range"], **named
        )
        return cls(
            split=e["split"],
            tgt_len=e["tgt_len"] or run.train.tgt_len,
            batch_size=e["batch_size"],
            max_segments=e["max_segments"],
            precision=run.train.precision if device is None else pick_precision(run.train.precision, device),
            plan=plan,
            memory=e["memory"],
            named=named,
            n_layer=n,
            protocol=proto,
            corpus=e.get("corpus"),
            tokenizer=e.get("tokenizer"),
        )

    def plans(self, memories: list[str | None] | None = None) -> list[MemoryPlan]:
        """The evaluation plan with each of these memories (plan language), named by them; none: the spec's own."""
        out = []
        for text in memories or [self.memory]:
            plan = self.plan if text is None else self.plan.with_values("memory", parse_plan(text, self.n_layer))
            words = naming()
            suffix = "".join(f", {words[f]} {t}" for f, t in self.named.items())
            out.append(replace(plan, name=(text or "as trained") + suffix))
        return out


# the settings EvalSpec.for_run takes beside the plan dimensions an evaluation may change (txl.model.dimensions)
SETTINGS = ("split", "tgt_len", "batch_size", "max_segments", "same_length", "clamp_len", "corpus", "tokenizer")


def eval_flags() -> tuple[str, ...]:
    """Every flag EvalSpec.for_run takes: its settings and each plan dimension an evaluation may change."""
    return SETTINGS + tuple(dim.flag for dim in at_eval().values())


def naming() -> dict[str, str]:
    """The plan dimensions that, given, name evaluation plans (a flag and the word its name uses)."""
    return {dim.flag: dim.title for dim in optional().values() if dim.at_eval}


def check_flags(given: dict) -> None:
    """Numbers given as flags (None: not given), in the domains the config gives the same fields: one line naming
    the flag. EvalSpec.for_run checks them too; a command calls this first to refuse bad flags before loading."""
    domains = DOMAINS[EvalConfig]
    for name, value in given.items():
        if value is not None and name in domains and not isinstance(value, bool) and isinstance(value, (int, float)):
            if value not in domains[name]:
                raise TxlError(f"--{name.replace('_', '-')} must be {domains[name]}, got {value}")


@dataclass
class EvalResult:
    """What one evaluation measured: loss and the corpus's metrics, where and how much, and the series beside."""

    quality: dict[str, float]  # loss in nats per token, bits per token, and bpb, bpc or ppl (see `quality`)
    split: str
    tokens: int
    segments: int
    tgt_len: int
    loss_by_position: list[float]
    blocks: dict  # loss sums and token counts over contiguous blocks (see `blocks`)
    accuracy: float | None = None  # a synthetic task's
    plan: str | None = None
    budget: dict | None = None  # cached_positions, memory_mib, receptive_field of the plan evaluated

    @property
    def loss(self) -> float:
        return self.quality["loss"]

    def value(self, metric: str) -> float:
        """The named number (bpb, bpc, ppl, accuracy, loss), or the loss where the result has no such number."""
        return self.scalars().get(metric, self.loss)

    def to_dict(self) -> dict:
        """The plain form kept in records, logs and result rows."""
        out = {**self.quality, "split": self.split, "tokens": self.tokens, "segments": self.segments}
        out.update(tgt_len=self.tgt_len, loss_by_position=self.loss_by_position, blocks=self.blocks)
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.plan is not None:
            out["plan"] = self.plan
        return {**out, **(self.budget or {})}

    def scalars(self) -> dict:
        """Without the per-position and per-block lists: what a log row or a table holds."""
        return scalars(self.to_dict())


class _Tally:
    """Loss sums by in-segment position, by segment and stream, and hits, in float64 on the model's device."""

    def __init__(self, tgt_len: int, n_segments: int, batch_size: int, device: torch.device):
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.loss_sum, self.count, self.correct = z(tgt_len), z(tgt_len), z(())
        self.seg_loss, self.seg_count = z(n_segments, batch_size), z(n_segments, batch_size)

    def add(self, index: int, nll: torch.Tensor, mask: torch.Tensor | None, hits: torch.Tensor | None) -> None:
        weight = mask.double() if mask is not None else torch.ones_like(nll, dtype=torch.float64)
        n = nll.size(1)
        scored = nll.double() * weight
        self.loss_sum[:n] += scored.sum(0)
        self.count[:n] += weight.sum(0)
        self.seg_loss[index] = scored.sum(1)
        self.seg_count[index] = weight.sum(1)
        if hits is not None:
            self.correct += (hits * weight).sum()

    def result(self, corpus: Corpus, spec: EvalSpec, n_segments: int) -> EvalResult:
        total = float(self.count.sum())
        loss = float(self.loss_sum.sum()) / max(total, 1.0)
        return EvalResult(
            quality(loss, corpus, spec.split),
            spec.split,
            int(total),
            n_segments,
            spec.tgt_len,
            (self.loss_sum / self.count.clamp(min=1)).tolist(),
            blocks(self.seg_loss, self.seg_count),
            float(self.correct) / max(total, 1.0) if corpus.task is not None else None,
        )


def _score(model: TransformerXL, seg, mems, task: bool, precision: str, device: torch.device):
    """One segment: per-token NLL, hits on a synthetic task (else None), and the new memory."""
    with autocast(device, precision):
        if task:
            logp, mems = model(seg.inputs, mems)
            nll = -logp.float().gather(-1, seg.targets[..., None]).squeeze(-1)
            return nll, (logp.argmax(-1) == seg.targets).double(), mems
        nll, mems = model(seg.inputs, mems, seg.targets)
        return nll, None, mems


@torch.no_grad()
def evaluate(
    model: TransformerXL,
    corpus: Corpus,
    spec: EvalSpec,
    plan: MemoryPlan | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run the split in order with memory carried across segments; return loss, metrics and loss by position.
    `plan` (default: the model as it is) is applied for this evaluation only."""
    device = next(model.parameters()).device
    split, tgt_len = spec.split, spec.tgt_len
    batch_size = max(1, min(spec.batch_size, len(corpus.splits[split]) // (2 * tgt_len) or 1))
    stream = corpus.stream(split, batch_size, tgt_len, device=device)
    n_segments = len(stream) if spec.max_segments is None else min(spec.max_segments, len(stream))
    tally = _Tally(tgt_len, n_segments, batch_size, device)
    bar = _bar(n_segments, split, plan) if progress else None
    was_training = model.training
    model.eval()
    try:
        with model.memory_plan(plan) if plan is not None else contextlib.nullcontext():
            mems = None
            for seg in stream.epoch(0):
                if seg.index >= n_segments:
                    break
                nll, hits, mems = _score(model, seg, mems, corpus.task is not None, spec.precision, device)
                tally.add(seg.index, nll, seg.mask, hits)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return tally.result(corpus, replace(spec, batch_size=batch_size), n_segments)


def _bar(n_segments: int, split: str, plan: MemoryPlan | None):
    from tqdm import tqdm

    desc = f"eval {split}" + (f" [{plan.name}]" if plan else "")
    return tqdm(total=n_segments, desc=desc, unit="seg", file=sys.stderr, leave=False)


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
    model: TransformerXL, corpus: Corpus, spec: EvalSpec, plans: list[MemoryPlan], progress: bool = False
) -> list[EvalResult]:
    """Evaluate one model under each plan; each result carries its plan's budget beside its quality."""
    results = []
    for plan in plans:
        out = evaluate(model, corpus, spec, plan, progress)
        b = budget(plan.apply(model.cfg), spec.tgt_len)
        out.plan = plan.name
        out.budget = {
            "cached_positions": b.cached_positions,
            "memory_mib": b.bytes / 2**20,
            "receptive_field": b.receptive_field[0],
        }
        results.append(out)
    return results


def plans_tables(results: list[EvalResult], metric: str, fmt: str = "text") -> str:
    """Quality and budget per plan, then (as text or Markdown) loss by position within the segment per plan.

    The receptive field is the guaranteed one: what every position of a segment sees at least.
    """
    bpb = metric == "ppl" and all("bpb" in r.quality for r in results)  # words or pieces: bits per byte beside
    rows = [
        [
            r.plan,
            r.budget["cached_positions"],
            r.budget["memory_mib"],
            whole(r.budget["receptive_field"]),
            r.value(metric),
            *([r.quality["bpb"]] if bpb else []),
            r.loss,
            r.tokens,
        ]
        for r in results
    ]
    headers = ["memory plan", "cached", "MiB/seq", "receptive field (guaranteed)", metric, *(["bpb"] if bpb else [])]
    first = render_table([*headers, "loss (nats)", "tokens"], rows, fmt)
    if fmt not in ("text", "markdown"):
        return first
    buckets = [position_buckets(r.loss_by_position) for r in results]
    rows = [[r.plan] + [v for _, v in b] for r, b in zip(results, buckets)]
    second = render_table(["memory plan"] + [name for name, _ in buckets[0]], rows, fmt)
    return f"{first}\n\nloss by position within the segment (more context to the right):\n{second}"
