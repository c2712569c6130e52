"""What a memory plan costs, as pure functions of the configuration.

Cached positions, bytes, attention FLOPs per token, parameter count and
receptive field; the tests check each against the built model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txl.attention import unbounded_layers, variant
from txl.config import ModelConfig
from txl.core.errors import TxlError
from txl.core.table import format_table
from txl.model.adaptive import cluster_dims
from txl.model.dimensions import Dimension, default_text, family_positions, optional
from txl.model.plans import describe
from txl.model.quantize import stored_bytes
from txl.plan.language import Compression
from txl.plan.reach import keys_per_query, max_distance, receptive_field

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def param_count(cfg: ModelConfig) -> int:
    """Distinct trainable parameters of TransformerXL(cfg), tied weights counted once."""
    d_model = cfg.d_model
    clusters = cluster_dims(cfg)
    tables = sum((b - a) * d for a, b, d in clusters)
    if cfg.div_val == 1:
        in_projs = [d_model * cfg.embed_dim] if d_model != cfg.embed_dim else []
        out_projs = [d_model * cfg.embed_dim] * len(clusters) if d_model != cfg.embed_dim else [0] * len(clusters)
    else:
        in_projs = [d_model * d for _, _, d in clusters]
        out_projs = [d_model * d for _, _, d in clusters]
    n = tables + sum(in_projs)
    n += cfg.vocab_size + len(cfg.cutoffs) * (cfg.embed_dim + 1)  # output biases; cluster rows of the head
    if not cfg.tie_weight:
        n += tables
    n += sum(p for p, tied in zip(out_projs, cfg.resolved_tie_projs()) if not tied)
    if not cfg.untie_r and any(variant(layer.attn).uses_rel_bias for layer in cfg.layers):
        n += 2 * cfg.n_head * cfg.d_head
    per_block = 4 * d_model + 2 * d_model * cfg.d_inner + cfg.d_inner + d_model  # two LayerNorms, feed-forward
    for layer in cfg.layers:
        n += per_block + variant(layer.attn).param_count(cfg, layer)
        if layer.cmem_len and layer.cmem_fn == "conv":  # the learned compressor: a Conv1d of kernel and stride rate
            n += d_model * d_model * layer.cmem_rate + d_model
    return n


def reach_lens(cfg: ModelConfig) -> list[int]:
    """Each layer's memory as its receptive field counts it: compressed slots at their span (length x rate), just
    before the raw memory. Exact when evictions come in whole groups (memory and segment lengths multiples of the
    rate); otherwise a last group of fewer states spans less (txl.plan.reach.dependencies follows it exactly)."""
    return [layer.mem_len + layer.cmem_len * layer.cmem_rate for layer in cfg.layers]


def dense_flops_per_token(cfg: ModelConfig) -> float:
    """Forward FLOPs per token of the matrix products outside attention scoring (projections, FF, output)."""
    inner = cfg.n_head * cfg.d_head
    per_layer = 2.0 * (4 * cfg.d_model * inner + 2 * cfg.d_model * cfg.d_inner)
    return cfg.n_layer * per_layer + 2.0 * cfg.d_model * cfg.vocab_size


@dataclass
class LayerBudget:
    index: int
    attn: str
    mem_len: int
    attn_range: int | None
    cached_positions: int
    state_values: int  # recurrent state other than cached positions, per sequence
    bytes: int
    keys_per_query: float
    attn_flops_per_token: float
    mem_dtype: str = "fp32"  # how the cached states are stored (txl.model.quantize); bytes count values and scales
    sinks: int = 0  # of the cached positions, the stream's first states kept for good (txl.model.cache.take_sinks)
    compress: str = "0"  # the compressed memory, LENGTH/RATE:FN; its slots are among the cached positions
    shown: dict[str, Any] = field(default_factory=dict)  # per optional plan dimension, the value tables show


@dataclass
class Budget:
    plan: dict[str, str]
    label: str  # how the user wrote the memory plan
    tgt_len: int
    batch: int
    dtype: str
    layers: list[LayerBudget] = field(default_factory=list)
    params: int = 0
    receptive_field: tuple[float, float] = (0.0, 0.0)
    dense_flops_per_token: float = 0.0

    @property
    def cached_positions(self) -> int:
        return sum(layer.cached_positions for layer in self.layers)

    @property
    def long_range_positions(self) -> int:
        """Positions cached by the layers at the plan's longest memory length (sinks are not memory length)."""
        recent = [layer.cached_positions - layer.sinks for layer in self.layers]
        return sum(r for r in recent if r == max(recent, default=0))

    @property
    def long_range_layers(self) -> int:
        recent = [layer.cached_positions - layer.sinks for layer in self.layers]
        longest = max(recent, default=0)
        return sum(1 for r in recent if r == longest and longest > 0)

    @property
    def bytes(self) -> int:
        return sum(layer.bytes for layer in self.layers)

    @property
    def attn_flops_per_token(self) -> float:
        return sum(layer.attn_flops_per_token for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "plan": self.plan,
            "label": self.label,
            "tgt_len": self.tgt_len,
            "batch": self.batch,
            "dtype": self.dtype,
            "params": self.params,
            "cached_positions": self.cached_positions,
            "long_range_positions": self.long_range_positions,
            "memory_bytes": self.bytes,
            "attn_flops_per_token": self.attn_flops_per_token,
            "dense_flops_per_token": self.dense_flops_per_token,
            "receptive_field": list(self.receptive_field),
            "layers": [{k: v for k, v in vars(layer).items() if k != "shown"} for layer in self.layers],
        }


def budget(cfg: ModelConfig, tgt_len: int, batch: int = 1, dtype: str = "float32", label: str | None = None) -> Budget:
    """The cost of cfg's memory plan for segments of `tgt_len` tokens, `batch` sequences, caches in `dtype`."""
    size = DTYPE_BYTES[dtype]
    plan = describe(cfg)
    out = Budget(plan=plan, label=label or plan["memory"], tgt_len=tgt_len, batch=batch, dtype=dtype)
    for i, layer in enumerate(cfg.layers):
        cls = variant(layer.attn)
        extra = layer.sinks + layer.cmem_len + family_positions(layer)  # sinks, slots, families': every query sees
        cached = cls.cache_len(layer) + extra
        state = cls.state_numel(cfg, layer)
        seen = min(layer.mem_len, max_distance(layer.mem_len, layer.attn_range, cfg.same_length_mode)) + extra
        keys = keys_per_query(layer.mem_len, layer.attn_range, tgt_len, cfg.same_length_mode) + extra
        flops = cls.core_flops(cfg, layer, keys, int(seen) + tgt_len, tgt_len)
        out.layers.append(
            LayerBudget(
                index=i,
                attn=layer.label,
                mem_len=layer.mem_len,
                attn_range=layer.attn_range,
                cached_positions=cached,
                state_values=state,
                bytes=(stored_bytes(layer.mem_dtype, cached, cfg.d_model, size) + state * size) * batch,
                keys_per_query=keys,
                attn_flops_per_token=flops,
                mem_dtype=layer.mem_dtype,
                sinks=layer.sinks,
                compress=str(
                    Compression(layer.cmem_len, layer.cmem_rate, layer.cmem_fn) if layer.cmem_len else Compression()
                ),
                shown={name: _shown(dim, dim.get(layer)) for name, dim in optional().items()},
            )
        )
    out.params = param_count(cfg)
    out.receptive_field = receptive_field(
        reach_lens(cfg), cfg.attn_ranges, tgt_len, cfg.same_length_mode, unbounded_layers(cfg)
    )
    out.dense_flops_per_token = dense_flops_per_token(cfg)
    return out


def step_bytes(cfg: ModelConfig, b: Budget, training: bool = True) -> dict[str, int]:
    """A rough estimate of what one step holds at its peak, in bytes (float32 weights and activations).

    Training: weights, gradients, Adam's two moments, every layer's activations (projections,
    feed-forward, scores and probabilities over the keys a layer sees) and the output logits;
    evaluation: weights and one layer's activations. Plus the memory cache, as budgeted.
    """
    tokens = b.batch * b.tgt_len
    weights = 4 * b.params
    per_layer = []
    for layer in cfg.layers:
        seen = min(layer.mem_len, max_distance(layer.mem_len, layer.attn_range, cfg.same_length_mode))
        scores = b.batch * cfg.n_head * b.tgt_len * (b.tgt_len + int(seen))
        per_layer.append(4 * (tokens * (12 * cfg.d_model + 2 * cfg.d_inner) + 3 * scores))
    logits = 4 * 2 * tokens * cfg.vocab_size
    parts = {"weights": weights}
    if training:
        parts.update(gradients=weights, optimizer=2 * weights, activations=sum(per_layer) + logits)
    else:
        parts["activations"] = max(per_layer, default=0) + logits
    parts["memory cache"] = b.bytes
    return parts


def available_bytes(device) -> int | None:
    """Memory free for a new run on `device` (a torch.device): the GPU's free memory, or the host's available memory."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def ensure_fits(cfg: ModelConfig, tgt_len: int, batch: int, device, training: bool = True) -> None:
    """Refuse, with the estimate, a step that clearly cannot fit (over twice the memory available)."""
    parts = step_bytes(cfg, budget(cfg, tgt_len, batch), training)
    need, have = sum(parts.values()), available_bytes(device)
    if have is not None and need > 2 * have:
        detail = ", ".join(f"{k} {_gib(v)}" for k, v in parts.items() if v)
        raise TxlError(
            f"a {'training' if training else 'evaluation'} step needs about {_gib(need)} ({detail}) but {device} has "
            f"{_gib(have)} available; use a smaller batch, segment, memory or model"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _mib(n: int) -> float:
    return n / 2**20


def reach_text(b: Budget) -> str:
    """The receptive field as 'guaranteed..largest' tokens ('inf' for unbounded)."""
    lo, hi = b.receptive_field
    fmt = lambda v: "inf" if v == float("inf") else f"{int(v):,}"  # noqa: E731
    return fmt(lo) if lo == hi else f"{fmt(lo)}..{fmt(hi)}"


def size_text(n: float) -> str:
    """Bytes in the unit that shows them: '512 bytes', '12.5 KiB', '3.2 MiB', '1.5 GiB' (never '0.0 MiB')."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n):,} bytes"


def _shown(dim: Dimension, value: Any) -> Any:
    """A layer's value of a dimension as a table shows it: a number as is (totals add them), else as plans write it."""
    return value if isinstance(value, int) and not isinstance(value, bool) else dim.kind.format_value(value)


def _used(budgets: list[Budget]) -> dict[str, Dimension]:
    """The optional plan dimensions (txl.model.dimensions) some layer of these budgets sets away from its default."""
    return {
        name: dim
        for name, dim in optional().items()
        if any(
            str(layer.shown.get(name, default_text(dim))) != default_text(dim) for b in budgets for layer in b.layers
        )
    }


ANCHORS = ("memory", "range", "cached")  # the columns an optional dimension's column may follow (budget_after)


def layer_table(b: Budget, markdown: bool = False) -> str:
    """One row per layer and a total row; a column for each optional plan dimension a layer sets (compressed memory,
    sinks, stored dtypes, ...) after the column it names. Each column is (header, a layer's value, the total's)."""
    used = _used([b])

    def total(name: str) -> Any:
        values = [layer.shown[name] for layer in b.layers]
        return sum(values) if all(isinstance(v, int) for v in values) else ""

    columns = [("layer", lambda layer: layer.index, "total"), ("attn", lambda layer: layer.attn, "")]
    for anchor, column in zip(
        ANCHORS,
        [
            ("mem_len", lambda layer: layer.mem_len, ""),
            ("range", lambda layer: "inf" if layer.attn_range is None else layer.attn_range, ""),
            ("cached", lambda layer: layer.cached_positions, b.cached_positions),
        ],
    ):
        columns.append(column)
        columns += [
            (d.title, lambda layer, n=n: layer.shown[n], total(n)) for n, d in used.items() if d.budget_after == anchor
        ]
    columns += [
        (f"MiB ({b.dtype}, batch {b.batch})", lambda layer: _mib(layer.bytes), _mib(b.bytes)),
        ("bytes", lambda layer: layer.bytes, b.bytes),
        ("keys/query", lambda layer: layer.keys_per_query, None),
        ("attn MFLOP/token", lambda layer: layer.attn_flops_per_token / 1e6, b.attn_flops_per_token / 1e6),
    ]
    rows = [[value(layer) for _, value, _ in columns] for layer in b.layers]
    rows.append([total for _, _, total in columns])
    return format_table([header for header, _, _ in columns], rows, markdown)


def _quantized(b: Budget) -> bool:
    return any(layer.mem_dtype != "fp32" for layer in b.layers)


def _sinks(b: Budget) -> int:
    """The most sinks a layer keeps (0: none)."""
    return max((layer.sinks for layer in b.layers), default=0)


def summary_lines(b: Budget) -> str:
    return "\n".join(
        [
            f"memory plan      {b.plan['memory']}   range {b.plan['range']}   attn {b.plan['attn']}"
            + "".join(f"   {dim.title} {b.plan[name]}" for name, dim in _used([b]).items()),
            f"cached positions {b.cached_positions:,} per sequence, "
            f"{size_text(b.bytes)}{f' ({b.bytes:,} bytes)' if b.bytes >= 1024 else ''} at {b.dtype} x batch {b.batch}",
            f"long-range       {b.long_range_positions:,} positions in {b.long_range_layers} layers "
            "at the longest memory",
            f"receptive field  {reach_text(b)} tokens (guaranteed..largest over a segment of {b.tgt_len})"
            + (f", and the stream's first {_sinks(b)} through sinks" if _sinks(b) else ""),
            f"attention        {b.attn_flops_per_token / 1e6:,.2f} MFLOP/token forward (scores and mixing)",
            f"dense            {b.dense_flops_per_token / 1e6:,.2f} MFLOP/token forward "
            "(projections, feed-forward, output)",
            f"parameters       {b.params:,}",
        ]
    )


def step_lines(cfg: ModelConfig, b: Budget) -> str:
    """What a training and an evaluation step need, estimated, at this batch and segment length."""
    lines = []
    for training in (True, False):
        parts = step_bytes(cfg, b, training)
        detail = ", ".join(f"{k} {size_text(v)}" for k, v in parts.items() if v)
        lines.append(
            f"{'training' if training else 'evaluation':<16} about {size_text(sum(parts.values()))} per step "
            f"at batch {b.batch} ({detail})"
        )
    return "\n".join(lines)


def compare_table(budgets: list[Budget], markdown: bool = False) -> str:
    """One row per plan, with cached and long-range memory relative to the first plan; a column for each optional
    plan dimension a plan sets (compressed memory, sinks, stored dtypes, ...). Each column is (header, a plan's
    value)."""
    base = budgets[0]
    quantized = any(_quantized(x) for x in budgets)

    def smaller(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else "-"

    columns = [
        ("memory", lambda b: b.label),
        ("range", lambda b: b.plan["range"]),
        *[
            (d.title, lambda b, n=n, d=d: b.plan.get(n, default_text(d)))
            for n, d in sorted(_used(budgets).items(), key=lambda item: ANCHORS.index(item[1].budget_after))
        ],
        ("cached", lambda b: b.cached_positions),
        ("long-range", lambda b: b.long_range_positions),
        ("long-range smaller", lambda b: smaller(base.long_range_positions, b.long_range_positions)),
        ("cached smaller", lambda b: smaller(base.cached_positions, b.cached_positions)),
        ("MiB", lambda b: _mib(b.bytes)),
        ("bytes", lambda b: b.bytes),
        *([("bytes smaller", lambda b: smaller(base.bytes, b.bytes))] if quantized else []),
        ("attn MFLOP/token", lambda b: b.attn_flops_per_token / 1e6),
        ("receptive field", reach_text),
    ]
    rows = [[value(b) for _, value in columns] for b in budgets]
    return format_table([header for header, _ in columns], rows, markdown)


def budgets_text(budgets: list[Budget], markdown: bool = False, cfgs: list[ModelConfig] | None = None) -> str:
    """Each plan's per-layer table and summary (with the step estimates, given the configs), then
    (for several) the side-by-side comparison."""
    parts: list[str] = []
    for i, b in enumerate(budgets):
        summary = summary_lines(b) + (("\n" + step_lines(cfgs[i], b)) if cfgs else "")
        parts += [layer_table(b, markdown), "", summary, ""]
    if len(budgets) > 1:
        parts.append(compare_table(budgets, markdown))
    return "\n".join(parts)
