"""The interface every attention variant implements, and the parts they share."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from txl.attention.masks import MaskCache
from txl.config import ConfigError, LayerConfig, ModelConfig
from txl.plan.reach import max_distance


@dataclass
class AttnContext:
    """What the layers of one forward pass share: masks, position embeddings, global biases."""

    same_length: bool | str  # False, or the rule in force: "tf" or "pt" (see txl.plan.reach.max_distance)
    masks: MaskCache
    pos_emb: Callable[[int], torch.Tensor] | None = None  # klen -> (klen, d_model), distances klen-1 .. 0
    r_w_bias: torch.Tensor | None = None  # u: the global content bias
    r_r_bias: torch.Tensor | None = None  # v: the global position bias
    impl: str = "plain"  # plain (the reference), sdpa or flex: see txl.attention.fast
    probe: Callable | None = None  # probe(attention module, probabilities (B, H, Q, K)) on the plain path: analyses


class Attention(nn.Module):
    """Multi-head attention of one layer over [memory; segment]; a variant implements `attend`.

    Queries come from the segment, keys and values from the layer's cached memory
    followed by the segment. Memory older than the layer's attention range is never
    visible, so it is dropped before any work is done.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    uses_rel_bias: ClassVar[bool] = False  # needs the global biases u, v (shared unless untie_r)
    fast_impls: ClassVar[frozenset[str]] = frozenset()  # faster implementations than plain this variant has

    def __init__(self, cfg: ModelConfig, layer: LayerConfig):
        super().__init__()
        self.layer = layer  # the model config's LayerConfig; an evaluation-time plan swaps in a planned copy
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        inner = cfg.n_head * cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * inner, bias=False)
        self.out = nn.Linear(inner, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.dropatt = nn.Dropout(cfg.dropatt)
        self.scale = cfg.d_head**-0.5
        self.rpb = None
        if layer.fastrpb:
            from txl.attention.fastrpb import FastRPB

            self.rpb = FastRPB(cfg)

    # ------------------------------------------------------------------ facts about a layer, from config alone

    @classmethod
    def check_layer(cls, layer: LayerConfig, where: str, same_length: bool = False) -> None:
        """Raise ConfigError if this variant cannot run with the layer's plan."""

    @classmethod
    def param_count(cls, cfg: ModelConfig, layer: LayerConfig) -> int:
        """Parameters this attention module owns."""
        inner = cfg.n_head * cfg.d_head
        n = 4 * cfg.d_model * inner  # query/key/value and output projections
        if layer.fastrpb:
            n += cfg.n_head * cfg.fastrpb.max_len
        return n

    @classmethod
    def cache_len(cls, layer: LayerConfig) -> int:
        """Past hidden states the layer keeps between segments."""
        return layer.mem_len

    @classmethod
    def state_numel(cls, cfg: ModelConfig, layer: LayerConfig) -> int:
        """Elements of recurrent state per sequence besides the hidden-state cache."""
        return 0

    @classmethod
    def unbounded(cls, layer: LayerConfig) -> bool:
        """Whether the layer carries a summary of the whole past (its reach is infinite)."""
        return False

    @classmethod
    def core_flops(cls, cfg: ModelConfig, layer: LayerConfig, keys: float, klen: int, tgt_len: int) -> float:
        """Forward FLOPs per token of scoring and mixing (and FastRPB's term), projections excluded."""
        flops = cls.mixing_flops(cfg, layer, keys, klen, tgt_len)
        if layer.fastrpb:
            from txl.attention.fastrpb import fft_flops_per_token

            flops += fft_flops_per_token(cfg, klen, tgt_len)
        return flops

    @classmethod
    def mixing_flops(cls, cfg: ModelConfig, layer: LayerConfig, keys: float, klen: int, tgt_len: int) -> float:
        """Forward FLOPs per token of the variant's own scoring and mixing."""
        return 4.0 * cfg.n_head * cfg.d_head * keys  # q.k and probabilities times values

    # ------------------------------------------------------------------ computation

    def max_distance(self, same_length: bool | str) -> float:
        return max_distance(self.layer.mem_len, self.layer.attn_range, same_length)

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor | None, state: dict, ctx: AttnContext
    ) -> tuple[torch.Tensor, dict]:
        """x: (B, Q, d_model) segment; mem: (B, M, d_model) or None. Returns output and extra state."""
        limit = self.max_distance(ctx.same_length)
        if mem is not None and mem.size(1) > limit:
            mem = mem[:, mem.size(1) - int(limit) :]
        kv_in = x if mem is None or mem.size(1) == 0 else torch.cat([mem, x], dim=1)
        inner = self.n_head * self.d_head
        q = self._heads(F.linear(x, self.qkv.weight[:inner]))
        # keys and values in one product: [memory; segment] is cast (under autocast)
        # and kept for backward once, not twice
        k, v = (self._heads(t) for t in F.linear(kv_in, self.qkv.weight[inner:]).chunk(2, dim=-1))
        y, extra = self.attend_stateful(q, k, v, limit, ctx, state)
        if self.rpb is not None:
            y = y + self.rpb(v, q.size(2), limit)
        return self.drop(self.out(self._merge(y))), extra

    def attend_stateful(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, limit: float, ctx: AttnContext, state: dict
    ) -> tuple[torch.Tensor, dict]:
        """Like `attend`, for variants that carry recurrent state besides the hidden-state cache."""
        return self.attend(q, k, v, limit, ctx), {}

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, limit: float, ctx: AttnContext) -> torch.Tensor:
        """(B, H, Q, dh) queries, (B, H, K, dh) keys and values -> (B, H, Q, dh).

        Variants with fast paths describe their scores as (content query) . k * scale plus an
        additive term (`score_bias`, `flex_score_mod`); this runs them by ctx.impl.
        """
        impl = self.pick_impl(ctx)
        if impl != "plain":
            from txl.attention import fast

            return {"sdpa": fast.attend_sdpa, "flex": fast.attend_flex, "fused": fast.attend_fused}[impl](
                self, q, k, v, limit, ctx
            )
        scores = (self.content_query(q, ctx) @ k.transpose(-1, -2)) * self.scale + self.score_bias(q, k.size(2), ctx)
        return self.softmax_attend(scores, v, limit, ctx)

    def pick_impl(self, ctx: AttnContext) -> str:
        """ctx.impl where this variant has it; flex and fused have no attention dropout,
        so sdpa stands in while it is on."""
        impl = ctx.impl if ctx.impl in self.fast_impls else "plain"
        if impl in ("flex", "fused") and self.training and self.dropatt.p > 0:
            impl = "sdpa" if "sdpa" in self.fast_impls else "plain"
        return impl

    def content_query(self, q: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """The query that meets the keys (Transformer-XL adds its content bias u)."""
        return q

    def score_bias(self, q: torch.Tensor, klen: int, ctx: AttnContext) -> torch.Tensor:
        """The scaled additive score term, broadcastable to (B, H, Q, K); junk where a key is not visible."""
        raise NotImplementedError

    def flex_score_mod(self, q: torch.Tensor, klen: int, ctx: AttnContext):
        """score_mod(score, b, h, q_idx, kv_idx) adding the same term as score_bias, for FlexAttention."""
        raise NotImplementedError

    def softmax_attend(self, scores: torch.Tensor, v: torch.Tensor, limit: float, ctx: AttnContext) -> torch.Tensor:
        """Mask (causal, within `limit`), softmax in float32, attention dropout, mix values."""
        probs = self.softmax(scores, limit, ctx)
        return self.dropatt(probs.to(v.dtype)) @ v

    def softmax(self, scores: torch.Tensor, limit: float, ctx: AttnContext) -> torch.Tensor:
        qlen, klen = scores.shape[-2:]
        mask = ctx.masks.visible(qlen, klen, limit)
        wide = scores.to(torch.promote_types(scores.dtype, torch.float32))  # bf16/fp16 scores softmax in float32
        probs = wide.masked_fill(~mask, -math.inf).softmax(dim=-1)
        if ctx.probe is not None:
            ctx.probe(self, probs)
        return probs

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_head, self.d_head).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Re-index (.., Q, K) position scores from 'key column k = distance K-1-k' to 'distance mlen+i-j'.

    Entry (i, j) of the result is x[i, j + Q - 1 - i]; entries with j > mlen + i
    (future keys) hold junk and must be masked. One pad and two views, no gather.
    """
    *lead, q, k = x.shape
    padded = F.pad(x, (1, 0))
    return padded.view(*lead, k + 1, q)[..., 1:, :].reshape(*lead, q, k)


def check_known(name: str, known: dict, where: str) -> None:
    if name not in known:
        raise ConfigError(f"{where}.attn: unknown attention variant {name!r} (known: {', '.join(known)})")
