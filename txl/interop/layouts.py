"""The two weight layouts txl reads and writes (`original`, `transformers`) and the table that renames each tensor
between txl and a layout; txl.interop.convert reads and writes the weights themselves."""

from __future__ import annotations

import re
from dataclasses import dataclass

LAYOUTS = ("original", "transformers")


@dataclass(frozen=True)
class Layout:
    name: str
    prefix: str  # in front of the transformer's own tensors
    shared_bias_copies: bool  # per-layer copies of shared u, v also appear (transformers)


LAYOUT = {"original": Layout("original", "", False), "transformers": Layout("transformers", "transformer.", True)}

# txl name pattern -> layout name pattern ({i} is a layer or cluster index); the prefix applies to
# everything but the adaptive softmax (crit.*)
NAMES = [
    (r"embed.emb_layers.{i}.weight", "word_emb.emb_layers.{i}.weight"),
    (r"embed.emb_projs.{i}", "word_emb.emb_projs.{i}"),
    ("r_w_bias", "r_w_bias"),
    ("r_r_bias", "r_r_bias"),
    ("layers.{i}.attn.qkv.weight", "layers.{i}.dec_attn.qkv_net.weight"),
    ("layers.{i}.attn.out.weight", "layers.{i}.dec_attn.o_net.weight"),
    ("layers.{i}.attn.r_proj.weight", "layers.{i}.dec_attn.r_net.weight"),
    ("layers.{i}.attn.r_w_bias", "layers.{i}.dec_attn.r_w_bias"),
    ("layers.{i}.attn.r_r_bias", "layers.{i}.dec_attn.r_r_bias"),
    ("layers.{i}.attn_norm.weight", "layers.{i}.dec_attn.layer_norm.weight"),
    ("layers.{i}.attn_norm.bias", "layers.{i}.dec_attn.layer_norm.bias"),
    ("layers.{i}.ff.fc1.weight", "layers.{i}.pos_ff.CoreNet.0.weight"),
    ("layers.{i}.ff.fc1.bias", "layers.{i}.pos_ff.CoreNet.0.bias"),
    ("layers.{i}.ff.fc2.weight", "layers.{i}.pos_ff.CoreNet.3.weight"),
    ("layers.{i}.ff.fc2.bias", "layers.{i}.pos_ff.CoreNet.3.bias"),
    ("layers.{i}.ff_norm.weight", "layers.{i}.pos_ff.layer_norm.weight"),
    ("layers.{i}.ff_norm.bias", "layers.{i}.pos_ff.layer_norm.bias"),
    ("head.cluster_weight", "crit.cluster_weight"),
    ("head.cluster_bias", "crit.cluster_bias"),
    ("head.out_layers.{i}.weight", "crit.out_layers.{i}.weight"),
    ("head.out_layers.{i}.bias", "crit.out_layers.{i}.bias"),
    ("head.out_projs.{i}", "crit.out_projs.{i}"),
]


def _regex(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(\d+)") + "$")


def rename(name: str, src: str, dst: str, layout: Layout) -> str | None:
    """Translate one tensor name between txl and a layout; None if it has no counterpart."""
    for ours, theirs in NAMES:
        if not theirs.startswith("crit."):
            theirs = layout.prefix + theirs
        a, b = (ours, theirs) if src == "txl" else (theirs, ours)
        m = _regex(a).match(name)
        if m:
            return b.replace("{i}", m.group(1)) if m.groups() else b
    return None
