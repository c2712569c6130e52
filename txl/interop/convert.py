"""Reading and writing Transformer-XL weights in other layouts.

Two layouts are known (txl.interop.layouts), each written down from its source's parameter definitions:

- `original`: the PyTorch code of Dai et al. (`MemTransformerLM`: word_emb.*, r_w_bias,
  layers.N.dec_attn.*, layers.N.pos_ff.CoreNet.*, crit.*, pos_emb.inv_freq);
- `transformers`: `TransfoXLLMHeadModel` (the same under `transformer.`, with per-layer
  `r_w_bias`/`r_r_bias` when `untie_r`, and `crit.*` for the adaptive softmax).

Tensors are read from safetensors or from a `torch.save`d state dict loaded with
weights_only=True; a pickled whole model is refused. Tied tensors may be absent from
a source (safetensors stores a shared tensor once; the published transformers
checkpoint leaves tied output weights out): they are taken from what they are tied to.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from txl.config import ModelConfig, RunConfig, apply_overrides, to_dict
from txl.core.errors import TxlError
from txl.core.io import atomic_path, atomic_write_json
from txl.interop.checks import InteropError, check_dims, check_hints, refuse_lossy
from txl.interop.layouts import LAYOUT, LAYOUTS, Layout, rename
from txl.model.plans import apply_plans, check_run
from txl.model.transformer import TransformerXL, inverse_frequencies
from txl.train.checkpoint import find_checkpoint, save_checkpoint, save_tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from .safetensors, or .bin/.pt/.pth holding a state dict (never unpickling objects)."""
    path = Path(path)
    if not path.is_file():
        raise TxlError(f"{path} " + ("is not a regular file" if path.exists() else "does not exist"))
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise InteropError(f"{path} is not a safetensors file ({e})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Unsupported global" in str(e) or "weights_only" in str(e):
            raise InteropError(
                f"{path} holds pickled Python objects (a whole model?), which txl does not unpickle: "
                "load it where it was made and save model.state_dict() instead, or convert it to safetensors"
            ) from None
        raise InteropError(f"cannot read {path} as a state dict ({type(e).__name__})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InteropError(f"{path} does not hold a dict of tensors")
    return dict(data)


# --------------------------------------------------------------------------- export


def export_state(model: TransformerXL, layout_name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The model's tensors under the layout's names (tied ones repeated, as a module's state_dict has them)
    and its config."""
    layout = LAYOUT[layout_name]
    cfg = model.cfg
    bad = [i for i, layer in enumerate(cfg.layers) if layer.attn != "xl" or layer.fastrpb]
    if bad:
        raise InteropError(
            f"layers {bad} use attention variants the {layout_name} layout has no place for; only xl layers export"
        )
    refuse_lossy(cfg, layout_name)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=False).items():
        theirs = rename(name, "txl", layout_name, layout)
        if theirs is None:
            raise InteropError(f"tensor {name} has no counterpart in the {layout_name} layout")
        out[theirs] = tensor.detach().clone().contiguous()
    if layout.shared_bias_copies and model.r_w_bias is not None:
        for i in range(cfg.n_layer):
            out[f"{layout.prefix}layers.{i}.dec_attn.r_w_bias"] = out[f"{layout.prefix}r_w_bias"].clone()
            out[f"{layout.prefix}layers.{i}.dec_attn.r_r_bias"] = out[f"{layout.prefix}r_r_bias"].clone()
    out[f"{layout.prefix}pos_emb.inv_freq"] = inverse_frequencies(cfg.d_model)
    return out, source_config(cfg, layout_name)


def with_overrides(model: TransformerXL, overrides: list[str]) -> TransformerXL:
    """The same weights under its config changed by dotted `model.*` overrides (a memory plan, same_length's rule):
    what `txl export --set` writes. A change the weights cannot follow (another width) is refused in one line."""
    bad = [o for o in overrides if not o.strip().startswith("model.")]
    if bad:
        raise InteropError(f"--set {bad[0]}: export changes model settings only (model.KEY=VALUE)")
    run = apply_overrides(RunConfig(model=copy.deepcopy(model.cfg)), overrides)
    out = TransformerXL(run.model).to(model.dtype).eval()
    try:
        out.load_state_dict(model.state_dict())
    except RuntimeError:
        raise InteropError(f"--set {' '.join(overrides)} changes the model's weights, which export cannot") from None
    return out


def source_config(cfg: ModelConfig, layout_name: str) -> dict:
    """The constructor arguments (original) or config.json (transformers) that rebuild this model there."""
    common = {
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "d_model": cfg.d_model,
        "d_head": cfg.d_head,
        "d_inner": cfg.d_inner,
        "d_embed": cfg.embed_dim,
        "div_val": cfg.div_val,
        "cutoffs": list(cfg.cutoffs),
        "tie_projs": cfg.resolved_tie_projs(),
        "pre_lnorm": cfg.pre_lnorm,
        "same_length": cfg.same_length,
        "clamp_len": cfg.clamp_len if cfg.clamp_len is not None else -1,
        "mem_len": max(cfg.mem_lens),
        "dropout": cfg.dropout,
        "dropatt": cfg.dropatt,
        "untie_r": cfg.untie_r,
        # the source's own code windows same_length at 0..mem_len-1; a txl model trained with the tf rule says so
        # here, and txl import reads it back (the source's code ignores it)
        "txl_same_length_rule": cfg.same_length_rule,
    }
    if layout_name == "original":
        return {"n_token": cfg.vocab_size, "tie_weight": cfg.tie_weight, "attn_type": 0, **common}
    return {
        "model_type": "transfo-xl",
        "architectures": ["TransfoXLLMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_weight,
        "adaptive": True,
        "attn_type": 0,
        "sample_softmax": -1,
        "layer_norm_epsilon": 1e-5,
        "init": "normal",
        "init_std": cfg.init_std,
        "proj_init_std": cfg.proj_init_std,
        **common,
    }


# --------------------------------------------------------------------------- import


def _layer_count(tensors: dict, layout: Layout) -> int:
    found = {int(m.group(1)) for k in tensors if (m := re.match(re.escape(layout.prefix) + r"layers\.(\d+)\.", k))}
    if not found:
        raise InteropError(
            f"no tensors named {layout.prefix}layers.N.* : "
            f"this is not a Transformer-XL state dict in the {layout.name} layout"
        )
    n = max(found) + 1
    if sorted(found) != list(range(n)):
        raise InteropError(f"layers {sorted(set(range(n)) - found)} are missing from the state dict")
    return n


def _need(tensors: dict, name: str) -> torch.Tensor:
    if name not in tensors:
        raise InteropError(f"missing tensor {name}")
    return tensors[name]


def _adaptive_input(tensors: dict, p: str, d_model: int, hints: dict) -> tuple[list, int, list[int], int]:
    """The embedding tables' shapes, div_val, cutoffs and the output's tail clusters, from the tensors (and hints)."""
    tables = []
    while f"{p}word_emb.emb_layers.{len(tables)}.weight" in tensors:
        tables.append(tensors[f"{p}word_emb.emb_layers.{len(tables)}.weight"].shape)
    if not tables:
        raise InteropError(f"missing tensor {p}word_emb.emb_layers.0.weight")
    n_clusters = tensors["crit.cluster_weight"].shape[0] if "crit.cluster_weight" in tensors else 0
    if len(tables) > 1:
        cutoffs = [sum(t[0] for t in tables[: i + 1]) for i in range(len(tables) - 1)]
        return tables, tables[0][1] // tables[1][1], cutoffs, n_clusters
    cutoffs = list(hints.get("cutoffs") or [])
    if f"{p}word_emb.emb_projs.0" in tensors and tables[0][1] == d_model:
        # one table with a square projection: the source had div_val > 1 and no cutoffs (with a single
        # cluster the value only decides that the projection exists)
        return tables, max(2, int(hints.get("div_val") or 2)), cutoffs, n_clusters
    if n_clusters and len(cutoffs) != n_clusters:
        raise InteropError(
            f"this checkpoint has {n_clusters} tail clusters in one output table, so its cutoffs cannot be read "
            f"from the tensors: give them with --cutoffs (e.g. 20000,40000,200000 for WikiText-103)"
        )
    return tables, 1, cutoffs, n_clusters


def _ties(tensors: dict, p: str, n_tables: int, n_clusters: int, div_val: int, hints: dict) -> tuple[bool, list[bool]]:
    """Whether the output layer shares the embedding weights, and each cluster's projection (hints win)."""
    tie_weight = all(
        f"crit.out_layers.{i}.weight" not in tensors
        or torch.equal(tensors[f"crit.out_layers.{i}.weight"], tensors[f"{p}word_emb.emb_layers.{i}.weight"])
        for i in range(n_tables)
    )
    if "tie_weight" in hints or "tie_word_embeddings" in hints:
        tie_weight = bool(hints.get("tie_weight", hints.get("tie_word_embeddings")))
    tie_projs = []
    for i in range(n_clusters + 1):
        src = f"{p}word_emb.emb_projs.{i if div_val > 1 else 0}"
        out = f"crit.out_projs.{i}"
        if src not in tensors:
            tie_projs.append(False)
        else:
            tie_projs.append(out not in tensors or torch.equal(tensors[out], tensors[src]))
    if hints.get("tie_projs") is not None and len(hints["tie_projs"]) == n_clusters + 1:
        tie_projs = [bool(t) for t in hints["tie_projs"]]  # otherwise (the original's one-flag default) the tensors say
    return tie_weight, tie_projs


def infer_config(tensors: dict[str, torch.Tensor], layout_name: str, hints: dict | None = None) -> ModelConfig:
    """A ModelConfig read from the tensors' names and shapes; `hints` (a source config) fills what shapes cannot say."""
    layout = LAYOUT[layout_name]
    hints = dict(check_hints(hints or {}))
    p = layout.prefix
    check_dims(tensors)
    n_layer = _layer_count(tensors, layout)
    qkv = _need(tensors, f"{p}layers.0.dec_attn.qkv_net.weight")
    d_model, inner = qkv.shape[1], qkv.shape[0] // 3
    shared = f"{p}r_w_bias" in tensors
    bias = tensors[f"{p}r_w_bias"] if shared else _need(tensors, f"{p}layers.0.dec_attn.r_w_bias")
    n_head, d_head = bias.shape
    if n_head * d_head != inner:
        raise InteropError(f"r_w_bias is {tuple(bias.shape)} but qkv_net projects to 3 x {inner}: inconsistent heads")
    d_inner = _need(tensors, f"{p}layers.0.pos_ff.CoreNet.0.weight").shape[0]
    tables, div_val, cutoffs, n_clusters = _adaptive_input(tensors, p, d_model, hints)
    tie_weight, tie_projs = _ties(tensors, p, len(tables), n_clusters, div_val, hints)
    clamp = hints.get("clamp_len")
    if int(hints.get("ext_len") or 0) > 0:
        raise InteropError(
            f"the source config has ext_len={hints['ext_len']}: txl does not evaluate with an extended context "
            "(the published protocols use ext_len 0); set ext_len to 0 in the config to import the weights"
        )
    cfg = ModelConfig(
        vocab_size=sum(t[0] for t in tables),
        n_layer=n_layer,
        d_model=d_model,
        n_head=n_head,
        d_head=d_head,
        d_inner=d_inner,
        d_embed=tables[0][1],
        div_val=div_val,
        cutoffs=cutoffs,
        tie_weight=tie_weight,
        tie_projs=tie_projs,
        untie_r=not shared,
        pre_lnorm=bool(hints.get("pre_lnorm", False)),
        same_length=bool(hints.get("same_length", False)),
        # both source layouts come from PyTorch code, whose window is 0..mem_len-1, unless txl exported it
        same_length_rule=hints.get("txl_same_length_rule", "pt"),
        clamp_len=clamp if clamp is not None and clamp > 0 else None,
        dropout=float(hints.get("dropout", 0.1)),
        dropatt=float(hints.get("dropatt", 0.0)),
    )
    if cfg.same_length_rule not in ("tf", "pt"):
        raise InteropError(f"txl_same_length_rule must be tf or pt, got {cfg.same_length_rule!r}")
    mem_len = hints.get("mem_len")
    return apply_plans(cfg, memory=str(512 if mem_len is None else int(mem_len)))


def import_state(tensors: dict[str, torch.Tensor], layout_name: str, hints: dict | None = None) -> TransformerXL:
    """A TransformerXL holding exactly the source's weights; every source tensor is used or named in the error."""
    if layout_name not in LAYOUT:
        raise TxlError(f"unknown layout {layout_name!r} (use {', '.join(LAYOUTS)})")
    layout = LAYOUT[layout_name]
    cfg = infer_config(tensors, layout_name, hints)
    # the source's own precision (a float64 source stays float64; bf16/fp16 sources are widened to float32)
    dtype = _need(tensors, f"{layout.prefix}layers.0.dec_attn.qkv_net.weight").dtype
    model = TransformerXL(cfg).to(torch.float64 if dtype == torch.float64 else torch.float32)
    wanted = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in tensors.items():
        if name.endswith("pos_emb.inv_freq"):
            expected = inverse_frequencies(cfg.d_model)
            if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected, rtol=1e-5):
                raise InteropError(
                    f"{name} is not the standard sinusoid's inverse frequencies; this model cannot hold it"
                )
            continue
        if (
            layout.shared_bias_copies
            and not cfg.untie_r
            and re.match(re.escape(layout.prefix) + r"layers\.\d+\.dec_attn\.r_[wr]_bias$", name)
        ):
            shared = tensors[layout.prefix + name.rsplit(".", 1)[1]]
            if not torch.equal(tensor, shared):
                raise InteropError(f"{name} differs from the shared {layout.prefix}{name.rsplit('.', 1)[1]}")
            continue
        ours = rename(name, layout_name, "txl", layout)
        if ours is None or ours not in wanted:
            unknown.append(name)
            continue
        if tuple(tensor.shape) != tuple(wanted[ours].shape):
            raise InteropError(
                f"tensor {name} has shape {tuple(tensor.shape)}, the inferred model expects {tuple(wanted[ours].shape)}"
            )
        loaded[ours] = tensor
    if unknown:
        raise InteropError(f"{len(unknown)} tensors have no place in the model: {', '.join(sorted(unknown)[:6])}")
    for name in wanted:
        if name not in loaded and (twin := _tied_twin(name, cfg)) in loaded:
            loaded[name] = loaded[twin]
    missing = [n for n in wanted if n not in loaded]
    if missing:
        names = [rename(n, "txl", layout_name, layout) or n for n in missing]
        raise InteropError(f"{len(missing)} tensors are missing: {', '.join(sorted(names)[:6])}")
    model.load_state_dict(loaded, strict=True)
    return model.eval()


def _tied_twin(name: str, cfg: ModelConfig) -> str | None:
    """The tensor `name` shares storage with, if any: a source may give either one."""
    if cfg.tie_weight:
        if m := re.match(r"head\.out_layers\.(\d+)\.weight$", name):
            return f"embed.emb_layers.{m.group(1)}.weight"
        if m := re.match(r"embed\.emb_layers\.(\d+)\.weight$", name):
            return f"head.out_layers.{m.group(1)}.weight"
    if m := re.match(r"head\.out_projs\.(\d+)$", name):
        i = int(m.group(1))
        if cfg.resolved_tie_projs()[i]:
            return f"embed.emb_projs.{i if cfg.div_val > 1 else 0}"
    return None


def write_txl_checkpoint(model: TransformerXL, out_dir: str | Path, run_config: dict, meta: dict) -> Path:
    """A checkpoint folder txl eval and txl generate can read."""
    out_dir = Path(out_dir)
    folder = save_checkpoint(out_dir / "checkpoints", 0, model, {"step": 0, "imported": True}, run_config, meta)
    (out_dir / "config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    return folder


def import_checkpoint(
    src: str | Path, layout: str, out: str | Path, hints: dict, corpus: str | None = None, tokenizer: str | None = None
) -> tuple[TransformerXL, Path, int]:
    """Read a source state dict into a new txl checkpoint under `out`: (model, checkpoint folder, tensors read)."""
    tensors = read_state_dict(src)
    model = import_state(tensors, layout, hints)
    out = Path(out)
    if find_checkpoint(out) is not None:
        raise TxlError(f"{out} already holds a checkpoint; choose another --out")
    run = RunConfig(model=model.cfg)
    run.train.tgt_len = int(hints.get("tgt_len") or 128)
    run.eval.tgt_len = run.train.tgt_len
    if corpus:
        run.data.corpus = corpus
    if tokenizer:
        run.data.tokenizer = str(Path(tokenizer).resolve()) if Path(tokenizer).suffix else tokenizer
    try:  # checked as a run's config, so nothing is written that txl eval would refuse
        check_run(run)
    except TxlError as e:
        raise TxlError(f"the imported config is not one txl can run ({e}); check --config and the flags") from None
    folder = write_txl_checkpoint(model, out, to_dict(run), {"imported_from": str(src), "layout": layout})
    return model, folder, len(tensors)


def export_checkpoint(model: TransformerXL, layout: str, out: str | Path, fmt: str = "safetensors") -> tuple[Path, int]:
    """Write the model's weights in `layout` (safetensors or a torch.save'd state dict) and its config.json.

    Returns the weights file and how many tensors it holds."""
    tensors, config = export_state(model, layout)
    out = Path(out)
    target = out / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    with atomic_path(target) as tmp:
        if fmt == "safetensors":
            save_file(tensors, str(tmp))
        else:
            save_tensors(tensors, tmp)
    atomic_write_json(out / "config.json", config)
    return target, len(tensors)
