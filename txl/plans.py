"""Plans applied to model configs, and the checks that need both the plan language and the variants.

config.py checks each field on its own, memory.py reads and writes plans, and
txl.attention knows what each variant can run. This module joins them: it writes
plans into a model config, describes a config's plans, and completes the checks of
a config (`check_model`, `check_run`) wherever one is built or loaded.
"""

from __future__ import annotations

import copy

from txl.attention import VARIANTS, check_layer
from txl.config import ConfigError, LayerConfig, ModelConfig, RunConfig
from txl.memory import MEMORY, RANGE, PlanKind, format_plan, parse_plan


def _parse_attn(text: str) -> str:
    name, plus, addon = text.partition("+")
    if name not in VARIANTS:
        raise ValueError(f"unknown attention variant {name!r} (known: {', '.join(VARIANTS)})")
    if plus and addon != "fastrpb":
        raise ValueError(f"unknown add-on {addon!r} after {name!r} (the one add-on is +fastrpb)")
    return text


ATTENTION = PlanKind("attention", ("attn",), _parse_attn, str, "xl")


def apply_plans(
    cfg: ModelConfig, memory: str | None = None, attn_range: str | None = None, attn: str | None = None
) -> ModelConfig:
    """A copy of `cfg` with per-layer memory lengths, ranges and variants set from plans (None keeps them)."""
    cfg = copy.deepcopy(cfg)
    n = cfg.n_layer
    if len(cfg.layers) != n:
        cfg.layers = [copy.deepcopy(cfg.layers[0]) if cfg.layers else LayerConfig() for _ in range(n)]
    if memory is not None:
        for layer, m in zip(cfg.layers, parse_plan(memory, n, MEMORY)):
            layer.mem_len = m
    if attn_range is not None:
        for layer, r in zip(cfg.layers, parse_plan(attn_range, n, RANGE)):
            layer.attn_range = r
    if attn is not None:
        for layer, a in zip(cfg.layers, parse_plan(attn, n, ATTENTION)):
            layer.attn, _, addon = a.partition("+")
            layer.fastrpb = addon == "fastrpb"
    return cfg


def describe(cfg: ModelConfig) -> dict[str, str]:
    """The model's plans in canonical form, for run names, logs and tables."""
    return {
        "memory": format_plan(cfg.mem_lens, MEMORY),
        "range": format_plan(cfg.attn_ranges, RANGE),
        "attn": format_plan([layer.label for layer in cfg.layers], ATTENTION),
    }


def check_model(cfg: ModelConfig) -> ModelConfig:
    """Every check of a model config: its fields, then each layer's variant against the layer's plan."""
    cfg.validate()
    for i, layer in enumerate(cfg.layers):
        check_layer(layer, f"model.layers.{i}", cfg.same_length)
    return cfg


def check_run(run: RunConfig) -> RunConfig:
    """Every check of a run config: each section's fields, the model's layers, and the evaluation plans."""
    run.validate()
    check_model(run.model)
    for plan, kind, field_name in ((run.eval.memory, MEMORY, "memory"), (run.eval.attn_range, RANGE, "attn_range")):
        if plan is not None:
            try:
                parse_plan(plan, run.model.n_layer, kind)
            except ConfigError as e:
                raise ConfigError(f"eval.{field_name}: {e}") from None
    return run
