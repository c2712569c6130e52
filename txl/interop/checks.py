"""What the other layouts' code can hold, checked before weights cross over: a txl plan the target's code cannot
run (refused on export, naming what would be lost), and a source's config and tensors of the wrong kinds (refused
on import). One line each."""

from __future__ import annotations

import dataclasses

from txl.config import LayerConfig, ModelConfig
from txl.core.errors import TxlError
from txl.model.dimensions import DIMENSIONS, default_text, optional
from txl.plan.language import format_plan


class InteropError(TxlError):
    """A state dict that does not fit a layout; the message names the tensors."""


FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LayerConfig)}


def refuse_lossy(cfg: ModelConfig, layout_name: str) -> None:
    """Refuse, in one line naming what would be lost, a plan the layout's code cannot run: it has one memory length
    for every layer, no attention range, sinks, compressed or quantized memory (no value but the default of any
    dimension the registry does not say the layout holds: txl.model.dimensions), and windows same_length at
    0..mem_len-1 (txl's pt rule)."""
    dims = {**optional(), **{n: d for n, d in DIMENSIONS.items() if d.always}}  # the older dimensions after
    for name, dim in dims.items():
        if name == "memory" or layout_name in dim.layouts:  # one length for every layer: checked below
            continue
        default = dim.kind.default
        layers = [i for i, layer in enumerate(cfg.layers) if dim.get(layer) != default]
        if layers:
            field_name = dim.field or f"extra.{name}"
            shown = FIELD_DEFAULTS.get(field_name, default_text(dim))  # what --set writes back: the field's default
            shown = "none" if shown is None else shown
            raise InteropError(
                f"layers {layers} {dim.lossy or f'set {dim.title}'} ({field_name}), which the {layout_name} code "
                f"cannot; export with --set model.layers.N.{field_name}={shown} or keep the model in txl"
            )
    if len(set(cfg.mem_lens)) > 1:
        raise InteropError(
            f"the memory plan {format_plan(cfg.mem_lens)} gives layers different lengths; the {layout_name} code has "
            "one mem_len for every layer: export with one length (--set model.layers.N.mem_len=...) or keep it in txl"
        )
    if cfg.same_length and cfg.same_length_rule != "pt":
        raise InteropError(
            f"same_length under txl's {cfg.same_length_rule} rule (keys at distances 0..mem_len) differs from the "
            f"{layout_name} code's (0..mem_len-1): export with --set model.same_length_rule=pt (it then scores as the "
            "source does) or keep the model in txl"
        )


MATRICES = ("emb_layers", "emb_projs", "out_projs", "qkv_net", "o_net", "r_net", "CoreNet", "out_layers", "r_w_bias")
HINT_TYPES = {  # what a source config's fields must hold, where txl reads them
    **dict.fromkeys(("mem_len", "clamp_len", "ext_len", "n_layer", "n_head", "d_model", "d_head", "d_inner"), int),
    **dict.fromkeys(("d_embed", "div_val", "n_token", "vocab_size", "tgt_len"), int),
    **dict.fromkeys(("same_length", "pre_lnorm", "untie_r", "tie_weight", "tie_word_embeddings"), bool),
    "cutoffs": list,
    "tie_projs": list,
    "txl_same_length_rule": str,
}


def check_hints(hints: object) -> dict:
    """A source config (import --config) as txl reads it: an object whose known fields hold the right kinds."""
    if not isinstance(hints, dict):
        raise InteropError(f"the source config must be a JSON object, got a {type(hints).__name__}")
    for key, kind in HINT_TYPES.items():
        value = hints.get(key)
        if value is None:
            continue
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is int and isinstance(value, float) and value.is_integer():
            ok = True
        if kind is list:
            item = bool if key == "tie_projs" else int
            ok = ok and all(isinstance(v, item) and (item is bool or not isinstance(v, bool)) for v in value)
        if not ok:
            want = {int: "a whole number", bool: "true or false", str: "a string", list: "a list"}[kind]
            raise InteropError(f"the source config's {key} must be {want}, got {value!r}")
    return hints


def check_dims(tensors: dict) -> None:
    """Weights that are matrices in every Transformer-XL (projections, embeddings, the biases u and v) are 2-D."""
    for name, t in tensors.items():
        if any(m in name for m in MATRICES) and not name.endswith(".bias") and t.dim() != 2:
            raise InteropError(f"tensor {name} has shape {tuple(t.shape)}, where a Transformer-XL holds a matrix")
