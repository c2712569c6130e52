"""txl import, txl export: Transformer-XL weights in the original or transformers layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from txl.cli.args import add_overrides, command, int_list
from txl.core.errors import TxlError


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a state dict: .safetensors, or .bin/.pt/.pth saved with torch.save(model.state_dict())")
    p.add_argument(
        "--from",
        dest="layout",
        choices=["original", "transformers"],
        required=True,
        help="original: Dai et al.'s MemTransformerLM; transformers: TransfoXLLMHeadModel",
    )
    p.add_argument("--out", required=True, help="folder for the txl checkpoint (txl eval and txl generate read it)")
    p.add_argument(
        "--config", metavar="JSON", help="the source's config (transformers config.json, or the original's arguments)"
    )
    p.add_argument("--cutoffs", type=int_list, help="adaptive softmax cutoffs, when the tensors cannot tell them")
    p.add_argument("--pre-lnorm", action="store_true", default=None, help="the source used pre-LayerNorm")
    p.add_argument(
        "--mem-len", type=int, help="memory length to evaluate with (default: the source config's, else 512)"
    )
    p.add_argument("--same-length", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--clamp-len", type=int)
    p.add_argument("--corpus", help="the corpus to evaluate on, e.g. wikitext-103")
    p.add_argument(
        "--tokenizer",
        help="tokenizer: bytes, words, ..., or a vocabulary file (.txt word list in id order, txl .json, .model)",
    )


@command("import", "read Transformer-XL weights (original or transformers layout) into a txl checkpoint", _import_args)
def cmd_import(args: argparse.Namespace) -> int:
    from txl.interop.checks import check_hints
    from txl.interop.convert import import_checkpoint
    from txl.model.plans import describe

    hints = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise TxlError(f"--config {path} " + ("is not a regular file" if path.exists() else "does not exist"))
        try:
            hints = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TxlError(f"cannot read --config {args.config}: {type(e).__name__}: {str(e)[:120]}") from None
        hints = check_hints(hints)
    for key, value in (
        ("cutoffs", args.cutoffs),
        ("pre_lnorm", args.pre_lnorm),
        ("mem_len", args.mem_len),
        ("same_length", args.same_length),
        ("clamp_len", args.clamp_len),
    ):
        if value is not None:
            hints[key] = value
    model, folder, n_tensors = import_checkpoint(args.src, args.layout, args.out, hints, args.corpus, args.tokenizer)
    cfg = model.cfg
    print(f"imported {n_tensors} tensors from {args.src} ({args.layout} layout) into {folder}")
    print(
        f"model      {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads of {cfg.d_head}, "
        f"d_inner {cfg.d_inner}, "
        f"vocabulary {cfg.vocab_size:,}, cutoffs {cfg.cutoffs or 'none'}, div_val {cfg.div_val}, untie_r {cfg.untie_r}"
    )
    print(f"parameters {model.num_params():,}; memory plan {describe(cfg)['memory']}")
    long = max(cfg.mem_lens)
    print(f"next       txl eval {args.out} --memory {long} --memory lrm=2@interleave:{long},srm={max(1, long // 8)}")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder or checkpoint folder")
    p.add_argument("--to", dest="layout", choices=["original", "transformers"], required=True)
    p.add_argument(
        "--out", required=True, help="folder to write model.safetensors (or pytorch_model.bin) and config.json into"
    )
    p.add_argument(
        "--format",
        choices=["safetensors", "bin"],
        default="safetensors",
        help="bin: a torch.save'd state dict of tensors, for code that expects pytorch_model.bin",
    )
    add_overrides(p, "a model setting to export with, e.g. model.same_length_rule=pt (repeatable)")


@command("export", "write a txl model's weights in the original or transformers layout", _export_args)
def cmd_export(args: argparse.Namespace) -> int:
    from txl.interop.convert import export_checkpoint
    from txl.train.runs import load_trained

    model = load_trained(args.path, "cpu").model
    if args.overrides:
        from txl.interop.convert import with_overrides

        model = with_overrides(model, args.overrides)
    target, n_tensors = export_checkpoint(model, args.layout, args.out, args.format)
    print(f"wrote {n_tensors} tensors in the {args.layout} layout to {target}, and {Path(args.out) / 'config.json'}")
    return 0
