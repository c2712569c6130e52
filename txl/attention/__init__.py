"""Attention variants, one module each behind one interface, chosen per layer by name."""

from __future__ import annotations

# isort: off
# The variants' settings sections register when their modules are imported, in this order (their order in JSON);
# fastrpb holds the settings of the +fastrpb add-on, which no variant class imports at module level.
from txl.attention import las, biases, fastrpb, sikf  # noqa: F401

# isort: on
from txl.attention.base import Attention, AttnContext, check_known
from txl.attention.biases import ALiBiAttention, T5Attention
from txl.attention.las import LaSAttention, LocalityAttention, SmoothnessAttention
from txl.attention.sikf import SIKFAttention
from txl.attention.xl import XLAttention
from txl.config import LayerConfig, ModelConfig

VARIANTS: dict[str, type[Attention]] = {}


def register(cls: type[Attention]) -> type[Attention]:
    """Add a variant under its `name`; a second variant of the same name is refused."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in VARIANTS:
        raise ValueError(f"attention variant {cls.name!r} is registered twice")
    VARIANTS[cls.name] = cls
    return cls


for _cls in (
    XLAttention,
    LaSAttention,
    LocalityAttention,
    SmoothnessAttention,
    ALiBiAttention,
    T5Attention,
    SIKFAttention,
):
    register(_cls)


def variant(name: str) -> type[Attention]:
    """The attention class registered under `name`."""
    check_known(name, VARIANTS, "model.layers.N")
    return VARIANTS[name]


def check_layer(layer: LayerConfig, where: str, same_length: bool = False) -> None:
    """Raise ConfigError if the layer names an unknown variant or one that cannot run its plan."""
    check_known(layer.attn, VARIANTS, where)
    VARIANTS[layer.attn].check_layer(layer, where, same_length)


def unbounded_layers(cfg: ModelConfig) -> list[bool]:
    """Which layers carry a summary of the whole past (their receptive field is infinite)."""
    return [VARIANTS[layer.attn].unbounded(layer) for layer in cfg.layers]


def build_attention(cfg: ModelConfig, layer: LayerConfig) -> Attention:
    return VARIANTS[layer.attn](cfg, layer)


__all__ = [
    "Attention",
    "AttnContext",
    "VARIANTS",
    "build_attention",
    "check_layer",
    "register",
    "unbounded_layers",
    "variant",
]
