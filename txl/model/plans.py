"""The memory-plan object, plans applied to model configs, and the checks that need plans and variants together.

config checks each field on its own, txl.plan.language reads and writes the plan language, and
txl.attention knows what each variant can run. This module joins them: `MemoryPlan` holds
everything a plan says per layer (memory length, attention range, attention variant; a new
per-layer memory dimension is one `Dimension` in txl.model.dimensions' registry),
and `MemoryPlan.apply` is the one place a plan is written into a model config, for
training configs, evaluation-time plans, budgets and the plan search alike. It also
describes a config's plans and completes the checks of a config (`check_model`,
`check_run`) wherever one is built or loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from txl.attention import VARIANTS, check_layer
from txl.config import ConfigError, LayerConfig, ModelConfig, RunConfig
from txl.config.files import complete_sections
from txl.model.dimensions import (
    ATTENTION,
    DIMENSIONS,
    MEMORY_DTYPE,
    Dimension,
    family_positions,
    get_compression,
    plan_flags,
)
from txl.model.quantize import check_dtype
from txl.plan.language import MEMORY, RANGE, format_plan, parse_plan

__all__ = ["ATTENTION", "DIMENSIONS", "KEEP", "MEMORY_DTYPE", "Dimension", "MemoryPlan", "apply_plans", "describe"]

KEEP = "keep"  # a plan's clamp_len that keeps the model's own (None is a real value: no clamping)


@dataclass(frozen=True)
class MemoryPlan:
    """What a memory plan says: per layer, a value for each dimension it names; a dimension it does not name,
    `same_length=None` and `clamp_len=KEEP` keep the model's own. Immutable: applying it makes a new config."""

    name: str = "plan"
    layers: Mapping[str, tuple] = field(default_factory=dict)  # dimension name -> one value per layer
    same_length: bool | None = None
    clamp_len: int | None | str = KEEP

    @classmethod
    def parse(
        cls,
        n_layer: int,
        name: str = "plan",
        same_length: bool | None = None,
        clamp_len: int | None | str = KEEP,
        **texts: str | None,
    ) -> MemoryPlan:
        """A plan from the plan language, one text per dimension, by its flag name (`memory`, `attn_range`, `attn`,
        `memory_dtype`, `sinks`, `compress`; None keeps the model's; '' is an error)."""
        unknown = set(texts) - set(plan_flags())
        if unknown:
            raise TypeError(f"unknown plan dimensions {sorted(unknown)} (known: {', '.join(plan_flags())})")
        layers = {
            d: tuple(parse_plan(texts[dim.flag], n_layer, dim.kind))
            for d, dim in DIMENSIONS.items()
            if texts.get(dim.flag) is not None
        }
        return cls(name, layers, same_length, clamp_len)

    @classmethod
    def of_lists(
        cls,
        name: str = "plan",
        mem_lens: Sequence[int] | None = None,
        attn_ranges: Sequence[int | None] | None = None,
        same_length: bool | None = None,
        clamp_len: int | None | str = KEEP,
    ) -> MemoryPlan:
        """A plan from per-layer lists (None keeps the model's)."""
        given = {"memory": mem_lens, "range": attn_ranges}
        return cls(name, {d: tuple(v) for d, v in given.items() if v is not None}, same_length, clamp_len)

    @classmethod
    def of_config(cls, cfg: ModelConfig, name: str = "as configured") -> MemoryPlan:
        """Everything the config's plan says, every dimension named."""
        layers = {d: tuple(dim.get(layer) for layer in cfg.layers) for d, dim in DIMENSIONS.items()}
        return cls(name, layers, cfg.same_length, cfg.clamp_len)

    @property
    def mem_lens(self) -> list[int] | None:
        return list(self.layers["memory"]) if "memory" in self.layers else None

    @property
    def attn_ranges(self) -> list[int | None] | None:
        return list(self.layers["range"]) if "range" in self.layers else None

    def with_values(self, dimension: str, values: Sequence, name: str | None = None) -> MemoryPlan:
        """This plan with one dimension's per-layer values replaced (and, given, another name)."""
        layers = {**self.layers, dimension: tuple(values)}
        return MemoryPlan(name or self.name, layers, self.same_length, self.clamp_len)

    def settings(self) -> dict:
        """What the plan keeps beside its memory lengths, in plain values: part of a search result's identity."""
        return {"attn_ranges": self.attn_ranges, "same_length": self.same_length, "clamp_len": self.clamp_len}

    def apply(self, cfg: ModelConfig) -> ModelConfig:
        """A copy of `cfg` with this plan written in; `cfg` itself is never changed."""
        out = copy.deepcopy(cfg)
        n = out.n_layer
        if len(out.layers) != n:
            out.layers = [copy.deepcopy(out.layers[0]) if out.layers else LayerConfig() for _ in range(n)]
        for d, values in self.layers.items():
            if len(values) != n:
                raise ConfigError(f"{d} plan has {len(values)} values but the model has {n} layers")
            for layer, v in zip(out.layers, values):
                DIMENSIONS[d].set(layer, v)
        if self.same_length is not None:
            out.same_length = self.same_length
        if self.clamp_len != KEEP:
            out.clamp_len = self.clamp_len
        return out


def apply_plans(cfg: ModelConfig, **texts: str | None) -> ModelConfig:
    """A copy of `cfg` with per-layer values set from plans, one text per dimension by its flag name (`memory`,
    `attn_range`, `attn`, `memory_dtype`, `sinks`, `compress`); None keeps the model's."""
    return MemoryPlan.parse(cfg.n_layer, **texts).apply(cfg)


def planned_model_config(cfg: ModelConfig, plan: MemoryPlan) -> ModelConfig:
    """`cfg` under an evaluation-time plan, checked layer by layer as a model would run it."""
    out = plan.apply(cfg)
    for i, (layer, own) in enumerate(zip(out.layers, cfg.layers)):
        if layer.mem_len < 0 or (layer.attn_range is not None and layer.attn_range < 0) or layer.sinks < 0:
            raise ConfigError(f"model.layers.{i}: memory length, range and sinks must be >= 0")
        _check_planned_layer(layer, f"model.layers.{i}", out.same_length)
        learned = get_compression(layer).fn == "conv"
        if learned and (get_compression(own).fn != "conv" or own.cmem_rate != layer.cmem_rate):
            raise ConfigError(
                f"model.layers.{i}: conv compression is learned, and this model has no compressor of rate "
                f"{layer.cmem_rate} in that layer; at evaluation use mean or max, or train with conv"
            )
    return out


def describe(cfg: ModelConfig) -> dict[str, str]:
    """The model's plans in canonical form, for run names, logs and tables. A dimension added after results were
    first written (memory dtypes, sinks) is named only when a layer uses it: older rows and tables keep their form."""
    out = {}
    for d, dim in DIMENSIONS.items():
        values = [dim.get(layer) for layer in cfg.layers]
        if dim.always or any(v != dim.kind.default for v in values):
            out[d] = format_plan(values, dim.kind)
    return out


def _check_planned_layer(layer: LayerConfig, where: str, same_length: bool | str) -> None:
    """A layer's variant against its plan, its memory dtype, and its sinks against its window."""
    check_layer(layer, where, same_length)
    try:
        check_dtype(layer.mem_dtype)
    except ValueError as e:
        raise ConfigError(f"{where}.mem_dtype: {e}") from None
    if layer.sinks and (layer.attn_range is not None or same_length):
        raise ConfigError(
            f"{where}: attention sinks are seen by every query, beyond any window, so the layer cannot also limit "
            f"its attention ({'same_length' if same_length else f'range {layer.attn_range}'}); "
            "its memory is the window: give sinks to layers with range inf, or drop the sinks"
        )
    if layer.sinks and VARIANTS[layer.attn].unbounded(replace(layer, mem_len=max(layer.mem_len, 1))):
        raise ConfigError(
            f"{where}: attention variant {layer.attn!r} carries its whole past in running sums, so sinks add nothing; "
            "give sinks to a softmax layer"
        )
    if family_positions(layer) and (layer.attn_range is not None or same_length):
        raise ConfigError(
            f"{where}: what a memory family keeps sits beyond the raw memory, so the layer cannot also limit its "
            f"attention ({'same_length' if same_length else f'range {layer.attn_range}'}); give it range inf"
        )
    if layer.cmem_len:
        if layer.attn_range is not None or same_length:
            raise ConfigError(
                f"{where}: compressed memory sits beyond the raw memory, so the layer cannot also limit its attention "
                f"({'same_length' if same_length else f'range {layer.attn_range}'}); give it range inf, or no compress"
            )
        if VARIANTS[layer.attn].unbounded(replace(layer, mem_len=max(layer.mem_len, 1))):
            raise ConfigError(f"{where}: attention variant {layer.attn!r} keeps no memory to compress")


def check_model(cfg: ModelConfig) -> ModelConfig:
    """Every check of a model config: its fields, then each layer's variant, memory dtype and sinks against the
    layer's plan."""
    complete_sections(cfg).validate()
    for i, layer in enumerate(cfg.layers):
        _check_planned_layer(layer, f"model.layers.{i}", cfg.same_length)
    return cfg


def check_run(run: RunConfig) -> RunConfig:
    """Every check of a run config: each section's fields, the model's layers, and the evaluation plans."""
    complete_sections(run.model)
    run.validate()
    check_model(run.model)
    for plan, kind, field_name in ((run.eval.memory, MEMORY, "memory"), (run.eval.attn_range, RANGE, "attn_range")):
        if plan is not None:
            try:
                parse_plan(plan, run.model.n_layer, kind)
            except ConfigError as e:
                raise ConfigError(f"eval.{field_name}: {e}") from None
    return run
