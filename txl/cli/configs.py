"""Configs from flags: the model, data and run configs a command's flags describe (the flags themselves are
declared in txl.cli.args), checked."""

from __future__ import annotations

import argparse

from txl.core.errors import TxlError


def apply_model_flags(cfg, args: argparse.Namespace, memory: str | None, fresh_widths: bool):
    """The model flags of add_model_args applied to `cfg`; plans last. fresh_widths: d_inner follows d_model."""
    from txl.model.dimensions import DIMENSIONS
    from txl.model.plans import apply_plans

    for flag, name in (("layers", "n_layer"), ("d_model", "d_model"), ("n_head", "n_head"), ("vocab", "vocab_size")):
        if getattr(args, flag, None) is not None:
            setattr(cfg, name, getattr(args, flag))
    if args.d_model is not None or args.n_head is not None or args.d_head is not None:
        if args.d_head is not None:
            cfg.d_head = args.d_head
        elif cfg.n_head >= 1:  # n_head < 1 is left for the config checks to name
            cfg.d_head = max(1, cfg.d_model // cfg.n_head)
    if args.d_inner is not None:
        cfg.d_inner = args.d_inner
    elif args.d_model is not None and fresh_widths:
        cfg.d_inner = 4 * args.d_model
    if args.same_length:
        cfg.same_length = True
    plans = {dim.flag: getattr(args, dim.flag, None) for name, dim in DIMENSIONS.items() if name != "memory"}
    return apply_plans(cfg, memory=memory, **plans)


def config_file(path: str) -> str:
    """--config: a JSON file, or a run folder (its config.json)."""
    from pathlib import Path

    if Path(path).is_dir():
        if not (Path(path) / "config.json").is_file():
            raise TxlError(f"--config {path} is a folder without a config.json; give a run folder or a JSON file")
        return str(Path(path) / "config.json")
    return path


def model_config_from_args(args: argparse.Namespace, memory: str | None):
    """The model config a command's flags describe, checked."""
    from txl.config import RunConfig, apply_overrides, load_config
    from txl.model.plans import check_model

    run = load_config(config_file(args.config)) if args.config else RunConfig()
    run.model = apply_model_flags(run.model, args, memory, fresh_widths=not args.config)
    apply_overrides(run, args.overrides)
    return check_model(run.model)


def data_config_from_args(args: argparse.Namespace, base=None):
    from txl.config import DataConfig

    cfg = base or DataConfig()
    if getattr(args, "corpus", None):
        cfg.corpus = args.corpus
    for name, field_name in (
        ("tokenizer", "tokenizer"),
        ("vocab_size", "vocab_size"),
        ("split", "split"),
        ("data_root", "root"),
    ):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, field_name, value)
    return cfg.validate()


def run_config_from_args(args: argparse.Namespace, base=None):
    """Preset, --config or `base` (a RunConfig), then flags, then --set: the run a command describes, checked."""
    from txl.config import apply_overrides, load_config
    from txl.model.plans import check_run
    from txl.train.presets import get_preset

    if args.preset and args.config:
        raise TxlError("give --preset or --config, not both")
    if base is not None:
        run = base
    else:
        run = load_config(config_file(args.config)) if args.config else get_preset(args.preset or "small")
    run.model = apply_model_flags(run.model, args, args.memory, fresh_widths=False)
    for flag, section, name in (
        ("corpus", "data", "corpus"),
        ("tokenizer", "data", "tokenizer"),
        ("vocab_size", "data", "vocab_size"),
        ("steps", "train", "steps"),
        ("batch_size", "train", "batch_size"),
        ("tgt_len", "train", "tgt_len"),
        ("lr", "train", "lr"),
        ("device", "train", "device"),
    ):
        if getattr(args, flag, None) is not None:
            setattr(getattr(run, section), name, getattr(args, flag))
    apply_overrides(run, args.overrides)
    return check_run(run)
