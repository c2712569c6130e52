"""The Transformer-XL language model (Dai et al. 2019) with a memory plan per layer.

    loss, mems = model(tokens, mems, targets)     # per-token NLL, (B, T)
    logp, mems = model(tokens, mems)              # log-probabilities, (B, T, vocab)

Tensors are batch-first. Memory is explicit state: a list with one LayerCache per layer
(txl.model.cache: its recent memory (B, mem_len, d_model), sinks and compressed slots as
stored, and whatever recurrent state a variant carries), detached so no gradient crosses
segments.
Layer l caches the input it saw (the output of layer l-1), as the original does.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from txl.attention import AttnContext, build_attention, variant
from txl.attention.fast import resolve_impl
from txl.attention.masks import MaskCache
from txl.config import LayerConfig, ModelConfig
from txl.model.adaptive import AdaptiveEmbedding, AdaptiveSoftmax
from txl.model.cache import LayerCache, Stored, evict, pool_groups, take_sinks
from txl.model.dimensions import families
from txl.model.plans import MemoryPlan, check_model, planned_model_config

Memory = list[LayerCache]


def sinusoid(pos: torch.Tensor, d_model: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(len,) positions -> (len, d_model) embeddings: sines then cosines of pos / 10000^(2k/d).

    Computed in float64 for a float64 model and in float32 otherwise, then returned in `dtype`
    (default: torch's default dtype).
    """
    dtype = dtype or torch.get_default_dtype()
    work = torch.float64 if dtype == torch.float64 else torch.float32
    angles = pos[:, None].to(work) * inverse_frequencies(d_model, work, pos.device)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


def inverse_frequencies(d_model: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(d_model / 2,) the sinusoid's 1 / 10000^(2k/d): what the original code stores as pos_emb.inv_freq."""
    return 1.0 / (10000 ** (torch.arange(0, d_model, 2, device=device, dtype=dtype) / d_model))


def _cat(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else torch.cat([a, b], dim=1)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_inner)
        self.fc2 = nn.Linear(cfg.d_inner, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.relu(self.fc1(x)))))


class Block(nn.Module):
    """Attention then feed-forward, each with a residual; LayerNorm after (default) or before."""

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.pre_lnorm = cfg.pre_lnorm
        layer = cfg.layers[index]
        self.attn = build_attention(cfg, layer)
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg)
        self.ff_norm = nn.LayerNorm(cfg.d_model)
        learned = layer.cmem_len and layer.cmem_fn == "conv"  # f_c of a compressed memory, trained by reconstruction
        self.compressor = (
            nn.Conv1d(cfg.d_model, cfg.d_model, layer.cmem_rate, stride=layer.cmem_rate) if learned else None
        )
        self.use_layer(layer)

    def forward(self, h: torch.Tensor, cache: LayerCache, ctx: AttnContext) -> tuple[torch.Tensor, LayerCache, Any]:
        """The layer's output, what it carries to the next segment, and (training a learned compression) the
        reconstruction loss of the states it compressed, else None."""
        dtype = self.attn_norm.weight.dtype
        parts = (cache.recent, cache.sinks, cache.slots)
        mem, sinks, cmem = (None if part is None else part.read(dtype) for part in parts)
        kept = {name: part.read(dtype) for name, part in cache.kept.items()}
        older = _cat(sinks, cmem)  # sinks, compressed slots, then what families keep, just before the oldest memory
        for states in kept.values():
            older = _cat(older, states)
        keys = _cat(older, mem)
        if self.pre_lnorm:
            a, extra = self.attn(self.attn_norm(h), None if keys is None else self.attn_norm(keys), cache.state, ctx)
            h2 = h + a
            out = h2 + self.ff(self.ff_norm(h2))
        else:
            a, extra = self.attn(h, keys, cache.state, ctx)
            h2 = self.attn_norm(h + a)
            out = self.ff_norm(h2 + self.ff(h2))
        nxt, old, recon = self._next_memory(cache, h, mem, sinks, cmem)
        nxt.state = extra
        self._keep_families(cache, nxt, old, kept)
        return out, nxt, recon

    def use_layer(self, layer: LayerConfig) -> None:
        """Run under this layer config (the model's, or an evaluation-time plan's planned copy): the attention reads
        it, and the registered memory families it keeps states for are found once here, not at every segment."""
        self.attn.layer = layer
        self.families = [
            (name, dim, dim.get(layer)) for name, dim in families().items() if dim.positions(dim.get(layer))
        ]

    def _keep_families(self, cache: LayerCache, nxt: LayerCache, old, kept: dict) -> None:
        """What each registered memory family (txl.model.dimensions) keeps of the states the memory evicted."""
        layer = self.attn.layer
        for name, dim, value in self.families:
            states = dim.keep(value, old, kept.get(name))
            if states is not None and states is kept.get(name):
                nxt.kept[name] = cache.kept[name]  # unchanged: kept as stored, never quantized again
            elif states is not None:  # a view of [mem; h] would keep all of it alive, beyond the bytes counted
                states = states.detach()
                nxt.kept[name] = Stored.of(states.clone() if states._base is not None else states, layer.mem_dtype)

    def _next_memory(self, cache: LayerCache, h: torch.Tensor, mem, sinks, cmem) -> tuple[LayerCache, Any, Any]:
        """What the layer keeps for the next segment (sinks, compressed slots and memory, stored in its dtype), the
        states its memory evicted (oldest first, or None), and the reconstruction loss of what it compressed when it
        learns its compression and trains (else None)."""
        layer, out, recon = self.attn.layer, LayerCache(), None
        recent = h
        if layer.sinks:
            kept, recent = take_sinks(sinks, h, layer.sinks)
            out.sinks = cache.sinks if kept is sinks else Stored.of(kept, layer.mem_dtype)  # full: kept as stored
        kept, old = evict(mem, recent, self.attn.cache_len(layer))
        if layer.cmem_len and old is None:
            out.slots = cache.slots
        elif layer.cmem_len:
            slots = pool_groups(old, layer.cmem_rate, layer.cmem_fn, self.compressor).detach()
            slots = _cat(cmem, slots)
            if slots.size(1) > layer.cmem_len:  # the newest, copied: a view would keep the older slots alive
                slots = slots[:, -layer.cmem_len :].clone()
            out.slots = Stored.of(slots, layer.mem_dtype)
            if self.compressor is not None and self.training:
                recon = self.reconstruction_loss(h, old)
        if kept is not None:
            out.recent = Stored.of(kept, layer.mem_dtype)
        return out, old, recon

    def reconstruction_loss(self, h: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Rae et al.'s attention-reconstruction loss: the segment's content attention over the evicted states and
        over their compression, compared by mean squared error. Every weight but the compressor's is detached: its
        gradient reaches f_c alone."""
        attn, inner = self.attn, self.attn.n_head * self.attn.d_head
        w = attn.qkv.weight.detach()
        see = (
            (lambda t: F.layer_norm(t, t.shape[-1:], self.attn_norm.weight.detach(), self.attn_norm.bias.detach()))
            if self.pre_lnorm
            else (lambda t: t)
        )
        q = attn._heads(F.linear(see(h.detach()), w[:inner]))

        def content_attention(m: torch.Tensor) -> torch.Tensor:
            k, v = (attn._heads(t) for t in F.linear(see(m), w[inner:]).chunk(2, dim=-1))
            return ((q @ k.transpose(-1, -2)) * attn.scale).softmax(-1) @ v

        with torch.no_grad():
            target = content_attention(old)
        compressed = pool_groups(old.detach(), self.attn.layer.cmem_rate, "conv", self.compressor)
        return F.mse_loss(content_attention(compressed), target)


class TransformerXL(nn.Module):
    """Transformer-XL language model; each layer's memory length, range and attention come from cfg.layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg = check_model(copy.deepcopy(cfg))
        self.cfg = cfg
        self.embed = AdaptiveEmbedding(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        if not cfg.untie_r and any(variant(layer.attn).uses_rel_bias for layer in cfg.layers):
            self.r_w_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.d_head))
            self.r_r_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.d_head))
        else:
            self.r_w_bias = self.r_r_bias = None
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.head = AdaptiveSoftmax(cfg, self.embed)
        self.probe = None  # set by an analysis to see attention probabilities (txl.evaluation.analysis); never saved
        self.recon_loss: torch.Tensor | None = None  # the last forward's reconstruction loss (learned compression)
        self.init_weights()

    # ------------------------------------------------------------------ parameters

    def init_weights(self) -> None:
        """The original's initialisation: N(0, init_std) weights, N(0, proj_init_std) projections, N(1, init_std)
        norms."""
        std, proj_std = self.cfg.init_std, self.cfg.proj_init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.normal_(module.weight, 1.0, std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv1d):  # a learned compressor starts as mean pooling
                with torch.no_grad():
                    module.weight.copy_(
                        torch.eye(module.in_channels)[:, :, None].expand_as(module.weight) / module.kernel_size[0]
                    )
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "emb_projs" in name or "out_projs" in name:
                nn.init.normal_(p, 0.0, proj_std)
            elif leaf in ("r_w_bias", "r_r_bias", "cluster_weight"):
                nn.init.normal_(p, 0.0, std)
            elif leaf == "cluster_bias":
                nn.init.zeros_(p)
        for module in self.modules():
            if hasattr(module, "init_txl"):
                module.init_txl(self.cfg)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (after `.to(dtype)`, `.double()`, `.bfloat16()`)."""
        return self.layers[0].attn.qkv.weight.dtype

    def num_params(self) -> int:
        """Distinct trainable values (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ memory

    def init_mems(self) -> Memory:
        """Empty memory: one empty LayerCache per layer."""
        return [LayerCache() for _ in self.layers]

    @contextlib.contextmanager
    def memory_plan(self, plan: MemoryPlan | None = None, **lists) -> Iterator[TransformerXL]:
        """Run under another memory plan inside a `with` block (no parameter changes): longer or shorter memories
        at evaluation. `plan` is a MemoryPlan, or give its lists (`mem_lens=[...]`, `attn_ranges=`, `same_length=`,
        `clamp_len=`). The model's own config is never changed: the block swaps in a planned copy, then swaps back."""
        planned = planned_model_config(self.cfg, plan if plan is not None else MemoryPlan.of_lists(**lists))
        own = self.cfg
        self._use_config(planned)
        try:
            yield self
        finally:
            self._use_config(own)

    def _use_config(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        for block, layer in zip(self.layers, cfg.layers):
            block.use_layer(layer)

    # ------------------------------------------------------------------ forward

    def context(self, qlen: int, mems: Memory, device: torch.device) -> AttnContext:
        """What every layer of this forward pass shares."""
        kmax = qlen + max([0] + [c.positions for c in mems])  # no max(default=): torch.compile breaks on it
        cache: dict[str, torch.Tensor] = {}

        def pos_emb(klen: int) -> torch.Tensor:
            # One embedding table (and one dropout mask) for all layers; each takes its last klen rows.
            if "table" not in cache:
                pos = torch.arange(kmax - 1, -1, -1, device=device)
                if self.cfg.clamp_len is not None:
                    pos = pos.clamp(max=self.cfg.clamp_len)
                cache["table"] = self.drop(sinusoid(pos, self.cfg.d_model, self.dtype))
            return cache["table"][kmax - klen :]

        return AttnContext(
            same_length=self.cfg.same_length_mode,
            masks=MaskCache(device),
            pos_emb=pos_emb,
            r_w_bias=self.r_w_bias,
            r_r_bias=self.r_r_bias,
            impl=resolve_impl(self.cfg.attn_impl, device),
            probe=self.probe,
        )

    def hidden(self, tokens: torch.Tensor, mems: Memory | None = None) -> tuple[torch.Tensor, Memory]:
        """(B, T) token ids -> (B, T, d_model) final hidden states (after dropout) and the new memory."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        mems = self.init_mems() if mems is None else mems
        if len(mems) != len(self.layers):
            raise ValueError(f"memory has {len(mems)} layers, the model {len(self.layers)}")
        h = self.drop(self.embed(tokens))
        ctx = self.context(tokens.size(1), mems, tokens.device)
        new_mems = []
        self.recon_loss = None
        for block, cache in zip(self.layers, mems):
            h, cache, recon = block(h, cache, ctx)
            if recon is not None:  # learned compression's reconstruction loss, for the trainer
                self.recon_loss = recon if self.recon_loss is None else self.recon_loss + recon
            new_mems.append(cache)
        if self.training and self.recon_loss is None and any(b.compressor is not None for b in self.layers):
            # nothing evicted yet: a zero that still reaches every compressor, so DDP sees each parameter used
            self.recon_loss = (
                sum(p.sum() for b in self.layers if b.compressor is not None for p in b.compressor.parameters()) * 0.0
            )
        return self.drop(h), new_mems

    def forward(
        self, tokens: torch.Tensor, mems: Memory | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Memory]:
        """Per-token NLL of `targets` (B, T) if given, else log-probabilities (B, T, vocab); and the new memory."""
        h, new_mems = self.hidden(tokens, mems)
        if targets is None:
            return self.head.log_prob(h), new_mems
        return self.head.nll(h, targets), new_mems
