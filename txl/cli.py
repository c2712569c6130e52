"""The `txl` command: thin subcommands over the library.

Errors a user can fix print one line (`txl: error: ...`) and exit with status 2;
Ctrl-C exits with status 130 and leaves every file whole.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from txl.errors import TxlError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as `txl NAME`; `add_args` declares its options."""

    def deco(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_args, run)
        return run

    return deco


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- shared arguments


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (flags override --config; --set overrides both)")
    g.add_argument("--config", metavar="FILE", help="a JSON run or model config to start from")
    g.add_argument("--layers", type=int, metavar="N", help="number of layers")
    g.add_argument("--d-model", type=int, metavar="D")
    g.add_argument("--n-head", type=int, metavar="H")
    g.add_argument("--d-head", type=int, metavar="DH", help="per-head width (default d_model / n_head)")
    g.add_argument("--d-inner", type=int, metavar="DI", help="feed-forward width (default 4 d_model)")
    g.add_argument("--vocab", type=int, metavar="V", help="vocabulary size")
    g.add_argument("--same-length", action="store_true", default=None, help="every query sees at most mem_len keys")
    g.add_argument(
        "--range", dest="attn_range", metavar="PLAN", help="attention range per layer, e.g. 'range=128@first:12' (default unlimited)"
    )
    g.add_argument("--attn", metavar="PLAN", help="attention variant per layer, e.g. 'attn=las@first:6,xl' (default xl)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.layers.3.mem_len=512 (repeatable)")


def apply_model_flags(cfg, args: argparse.Namespace, memory: str | None, fresh_widths: bool):
    """The model flags of add_model_args applied to `cfg`; plans last. fresh_widths: d_inner follows d_model."""
    from txl.memory import apply_plans

    for flag, name in (("layers", "n_layer"), ("d_model", "d_model"), ("n_head", "n_head"), ("vocab", "vocab_size")):
        if getattr(args, flag, None) is not None:
            setattr(cfg, name, getattr(args, flag))
    if args.d_model is not None or args.n_head is not None or args.d_head is not None:
        cfg.d_head = args.d_head if args.d_head is not None else max(1, cfg.d_model // cfg.n_head)
    if args.d_inner is not None:
        cfg.d_inner = args.d_inner
    elif args.d_model is not None and fresh_widths:
        cfg.d_inner = 4 * args.d_model
    if args.same_length:
        cfg.same_length = True
    return apply_plans(cfg, memory=memory, attn_range=args.attn_range, attn=args.attn)


def model_config_from_args(args: argparse.Namespace, memory: str | None):
    """The model config a command's flags describe, validated."""
    from txl.config import RunConfig, apply_overrides, load_config

    run = load_config(args.config) if args.config else RunConfig()
    run.model = apply_model_flags(run.model, args, memory, fresh_widths=not args.config)
    apply_overrides(run, args.overrides)
    return run.model.validate()


# --------------------------------------------------------------------------- txl budget


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory",
        action="append",
        metavar="PLAN",
        help="memory plan, e.g. '24x512' or 'lrm=4@interleave:2304,srm=128'; give several to compare them",
    )
    add_model_args(p)
    g = p.add_argument_group("what to count")
    g.add_argument("--tgt-len", type=int, default=512, metavar="T", help="segment length (default 512)")
    g.add_argument("--batch", type=int, default=1, metavar="B", help="sequences (default 1)")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="cache dtype")
    g.add_argument("--markdown", action="store_true", help="Markdown tables")
    g.add_argument("--json", action="store_true", help="print JSON instead of tables")


@command("budget", "what a memory plan costs: cached positions, bytes, FLOPs per token, parameters, receptive field", _budget_args)
def cmd_budget(args: argparse.Namespace) -> int:
    from txl.budget import budget, compare_table, layer_table, summary_lines

    if args.tgt_len < 1 or args.batch < 1:
        raise TxlError("--tgt-len and --batch must be >= 1")
    plans = args.memory or [None]
    budgets = [budget(model_config_from_args(args, plan), args.tgt_len, args.batch, args.dtype, plan) for plan in plans]
    if args.json:
        print(json.dumps([b.to_dict() for b in budgets] if len(budgets) > 1 else budgets[0].to_dict(), indent=2))
        return 0
    for b in budgets:
        print(layer_table(b, args.markdown))
        print()
        print(summary_lines(b))
        print()
    if len(budgets) > 1:
        print(compare_table(budgets, args.markdown))
    return 0


# --------------------------------------------------------------------------- txl data


def add_data_args(p: argparse.ArgumentParser, corpus_positional: bool = True) -> None:
    if corpus_positional:
        p.add_argument("corpus", nargs="?", default="pystdlib", help="a corpus name (txl data list) or a path (default pystdlib)")
    g = p.add_argument_group("data")
    g.add_argument("--tokenizer", help="auto, bytes, chars, words, sentencepiece, or a sentencepiece .model file")
    g.add_argument("--vocab-size", type=int, help="sentencepiece pieces, or the most frequent words to keep")
    g.add_argument("--split", choices=["auto", "contiguous", "files"], help="how a local corpus is split")
    g.add_argument("--data-root", help="cache folder (default $TXL_DATA, else ./data/cache)")


def data_config_from_args(args: argparse.Namespace, base=None):
    from txl.config import DataConfig

    cfg = base or DataConfig()
    if getattr(args, "corpus", None):
        cfg.corpus = args.corpus
    for name, field_name in (("tokenizer", "tokenizer"), ("vocab_size", "vocab_size"), ("split", "split"), ("data_root", "root")):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, field_name, value)
    return cfg.validate()


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser, required=True)
    sub.add_parser("list", help="the known corpora, their sizes, licences and splits")
    for name, help in (
        ("stats", "split sizes, vocabulary and token counts (downloads and tokenizes if needed)"),
        ("prepare", "download and tokenize a corpus into the cache"),
    ):
        q = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        add_data_args(q)
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="e.g. data.min_freq=3")


@command("data", "corpora: list them, prepare their token caches, show their statistics", _data_args)
def cmd_data(args: argparse.Namespace) -> int:
    import time

    from txl.table import format_table

    if args.data_command == "list":
        from txl.data.corpora import CORPORA

        rows = [[c.name, c.description, c.size, c.split, c.tokenizer, c.license] for c in CORPORA.values()]
        print(format_table(["name", "what", "size", "split", "tokenizer", "licence"], rows))
        print("\nA path to a file or folder works too, in place of a name (see data/README.md for how it is split).")
        return 0

    from txl.config import RunConfig, apply_overrides
    from txl.data import load_corpus

    run = RunConfig()
    run.data = data_config_from_args(args)
    apply_overrides(run, args.overrides)
    start = time.time()
    corpus = load_corpus(run.data.validate())
    seconds = time.time() - start
    if args.data_command == "prepare":
        print(f"{corpus.name}: ready in {seconds:.1f} s ({corpus.cache_dir or 'generated in memory'})")
        return 0
    rows = []
    for split, ids in corpus.splits.items():
        row = [split, corpus.files.get(split), corpus.raw_bytes[split], len(ids), corpus.bytes_per_token(split)]
        if corpus.masks is not None:
            row.append(int(corpus.masks[split].sum()))
        rows.append(row)
    headers = ["split", "files", "bytes", f"tokens ({corpus.unit}s)", "bytes/token"]
    if corpus.masks is not None:
        headers.append("scored answers")
    print(format_table(headers, rows))
    print()
    print(f"corpus      {corpus.name}: {corpus.source}")
    print(f"tokenizer   {corpus.tokenizer.kind}, vocabulary {corpus.vocab_size:,} ({corpus.splits['train'].dtype} ids)")
    print(f"cache       {corpus.cache_dir or 'none (generated in memory)'}")
    print(f"loaded in   {seconds:.2f} s")
    return 0


# --------------------------------------------------------------------------- txl bench


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return values


def _bench_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench_command", metavar="WHAT", parser_class=Parser, required=True)
    v = sub.add_parser(
        "variants",
        help="forward+backward time and peak memory of one attention layer per variant, against xl, as segments grow",
        description="Forward+backward time and peak memory of one attention layer per variant, relative to xl at "
        "each segment length, and how each grows from the shortest length to the longest. On a CPU each case "
        "runs in a fresh process so its peak memory can be measured.",
    )
    v.add_argument("--variants", default="xl,las,las-local,las-smooth,alibi,t5,sikf,sikf+fastrpb,fastrpb",
                   help="comma-separated; 'fastrpb' alone times the W V term by itself")
    v.add_argument("--lengths", type=_int_list, default=[512, 2048, 8192], help="segment lengths (default 512,2048,8192)")
    v.add_argument("--mem-len", type=int, default=0, help="memory positions in front of each segment (default 0)")
    v.add_argument("--d-model", type=int, default=256)
    v.add_argument("--n-head", type=int, default=4)
    v.add_argument("--d-head", type=int, default=64)
    v.add_argument("--batch", type=int, default=1)
    v.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up; the median is kept")
    v.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    v.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    v.add_argument("--out", metavar="FILE.json", help="also write the raw measurements here")
    v.add_argument("--markdown", action="store_true")

    t = sub.add_parser(
        "train",
        help="training-step and evaluation throughput, MFU and peak memory of a preset or config",
        description="Whole training steps (forward, backward, Adam) with memory carried from step to step, after "
        "a warm-up, median of --steps; evaluation forwards likewise. --compare runs the plain reference path "
        "and the fast path in the same process; several --memory plans are measured side by side.",
    )
    t.add_argument("--preset", default="enwik8-base", help="a preset (default enwik8-base)")
    t.add_argument("--config", help="a JSON run config instead of a preset")
    t.add_argument("--memory", action="append", metavar="PLAN", help="memory plan(s) to measure (default: the config's)")
    t.add_argument("--impl", default="auto", help="comma-separated attention implementations: auto, plain, sdpa, flex")
    t.add_argument("--compare", action="store_true", help="measure plain and the fast path (auto) and print their ratio")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--tgt-len", type=int)
    t.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default: the config's")
    t.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    t.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    t.add_argument("--eval-steps", type=int, default=10)
    t.add_argument("--device", default="auto")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--out", metavar="FILE.json")
    t.add_argument("--markdown", action="store_true")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TxlError("--device cuda asked for, but this machine has no CUDA device; use --device cpu")
    return name


@command("bench", "benchmarks: training throughput, and attention variants as segments grow (measured here, not in tests)", _bench_args)
def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "train":
        return bench_train(args)
    from txl.bench import variants_benchmark, variants_table
    from txl.io import atomic_write_json

    device = resolve_device(args.device)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    from txl.memory import ATTENTION, parse_plan

    for name in names:
        if name != "fastrpb":
            parse_plan(name, 1, ATTENTION)  # unknown names fail here, listing the known ones
    rows = variants_benchmark(
        names, args.lengths, device=device, mem_len=args.mem_len, batch=args.batch, d_model=args.d_model,
        n_head=args.n_head, d_head=args.d_head, repeats=args.repeats, dtype=args.dtype,
    )
    print(f"device {device}; one attention layer, d_model {args.d_model}, {args.n_head} heads of {args.d_head}, "
          f"batch {args.batch}, memory {args.mem_len}, {args.dtype}, forward+backward, median of {args.repeats}")
    print(variants_table(rows, args.markdown, absolute=device.startswith("cuda")))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"  {r['attn']} @{r['seq_len']}: {r['error']}")
    if args.out:
        atomic_write_json(args.out, {"device": device, "args": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows})
    return 0


def bench_train(args: argparse.Namespace) -> int:
    import torch

    from txl.bench import TrainCase, run_train_case, train_table
    from txl.config import apply_overrides, load_config
    from txl.io import atomic_write_json
    from txl.presets import get_preset
    from txl.train import pick_precision

    run = load_config(args.config) if args.config else get_preset(args.preset)
    if args.batch_size:
        run.train.batch_size = args.batch_size
    if args.tgt_len:
        run.train.tgt_len = args.tgt_len
    if args.precision:
        run.train.precision = args.precision
    apply_overrides(run, args.overrides)
    run.validate()
    device = torch.device(resolve_device(args.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = run.train.tf32
        torch.backends.cudnn.allow_tf32 = run.train.tf32
    precision = pick_precision(run.train.precision, device)
    impls = ["plain", "auto"] if args.compare else [i.strip() for i in args.impl.split(",") if i.strip()]
    for impl in impls:
        if impl not in ("auto", "plain", "sdpa", "flex"):
            raise TxlError(f"unknown --impl {impl!r} (use auto, plain, sdpa, flex)")
    cases = [TrainCase(f"{impl}" + (f" {plan}" if plan else ""), impl, plan) for plan in (args.memory or [None]) for impl in impls]
    rows = []
    for case in cases:
        print(f"measuring {case.label} ...", file=sys.stderr, flush=True)
        rows.append(run_train_case(run, case, device, precision, args.steps, args.warmup, args.eval_steps))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; {args.config or args.preset}: batch {run.train.batch_size} x {run.train.tgt_len} tokens, "
          f"{precision}, torch {torch.__version__}; median of {args.steps} steps after {args.warmup}")
    print(train_table(rows, args.markdown))
    if args.out:
        atomic_write_json(args.out, {"device": name, "precision": precision, "preset": args.config or args.preset, "rows": rows})
    return 0


# --------------------------------------------------------------------------- txl train


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="start from a named configuration (txl list shows them; default small)")
    p.add_argument("--run-dir", help="where the run's config, logs, TensorBoard files and checkpoints go (default runs/PRESET-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    p.add_argument("--memory", metavar="PLAN", help="training memory plan, e.g. 'lrm=2@interleave:256,srm=16'")
    add_model_args(p)
    g = p.add_argument_group("data and training")
    g.add_argument("--corpus", help="a corpus name (txl data list) or a path")
    g.add_argument("--tokenizer", help="auto, bytes, chars, words, sentencepiece, or a .model file")
    g.add_argument("--vocab-size", type=int, help="sentencepiece pieces, or the most frequent words to keep")
    g.add_argument("--steps", type=int)
    g.add_argument("--batch-size", type=int, help="sequences per process")
    g.add_argument("--tgt-len", type=int, help="segment length")
    g.add_argument("--lr", type=float)
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--stop-at-step", type=int, metavar="N", help="stop (with a checkpoint) after step N; --resume continues")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_config_from_args(args: argparse.Namespace):
    """Preset or --config, then flags, then --set: the run a command describes, validated."""
    from txl.config import apply_overrides, load_config
    from txl.presets import get_preset

    if args.preset and args.config:
        raise TxlError("give --preset or --config, not both")
    run = load_config(args.config) if args.config else get_preset(args.preset or "small")
    run.model = apply_model_flags(run.model, args, args.memory, fresh_widths=False)
    for flag, section, name in (
        ("corpus", "data", "corpus"), ("tokenizer", "data", "tokenizer"), ("vocab_size", "data", "vocab_size"),
        ("steps", "train", "steps"), ("batch_size", "train", "batch_size"), ("tgt_len", "train", "tgt_len"),
        ("lr", "train", "lr"), ("device", "train", "device"),
    ):
        if getattr(args, flag, None) is not None:
            setattr(getattr(run, section), name, getattr(args, flag))
    apply_overrides(run, args.overrides)
    return run.validate()


@command("train", "train a language model: memory carried across segments, checkpoints, TensorBoard, resume", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from txl.train import Trainer, finish_distributed, prepare_resume

    if args.resume:
        if not args.run_dir:
            raise TxlError("--resume needs --run-dir (the run folder to continue)")
        run = prepare_resume(Path(args.run_dir), args.overrides + ([f"train.steps={args.steps}"] if args.steps else []))
    else:
        run = run_config_from_args(args)
    run_dir = Path(args.run_dir or Path("runs") / f"{args.preset or 'small'}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = Trainer(run, run_dir, resume=args.resume, progress=not args.no_progress)
    if trainer.dist.main:
        print(f"run folder   {run_dir}  (tensorboard --logdir {run_dir})", file=sys.stderr)
    ok = False
    try:
        result = trainer.fit(stop_at=args.stop_at_step)
        ok = True
    finally:
        finish_distributed(ok)
    if not trainer.dist.main:
        return 0
    if result.get("final") is None:
        print(f"stopped after step {result['step']}; continue with: txl train --run-dir {run_dir} --resume")
        return 0
    final, metric = result["final"], result["metric"]
    print(f"step {result['step']}: {run.eval.split} {metric} {final.get(metric, final['loss']):.4f} "
          f"(loss {final['loss']:.4f} nats/token over {final['tokens']:,} tokens)")
    print(f"run folder   {run_dir}")
    print(f"tensorboard  tensorboard --logdir {run_dir}")
    return 0


# --------------------------------------------------------------------------- txl eval


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder (its last checkpoint) or a checkpoint folder")
    p.add_argument("--best", action="store_true", help="the run's best checkpoint instead of its last")
    p.add_argument("--split", choices=["valid", "test"], help="default: the run's eval.split")
    p.add_argument("--memory", action="append", metavar="PLAN", help="memory plan to evaluate with; repeat to compare plans (default: as trained)")
    p.add_argument("--range", dest="attn_range", metavar="PLAN", help="attention range plan")
    p.add_argument("--tgt-len", type=int, help="segment length (default: the run's eval.tgt_len)")
    p.add_argument("--clamp-len", type=int, help="clamp relative distances at this value")
    p.add_argument("--same-length", action=argparse.BooleanOptionalAction, default=None, help="every query sees mem_len keys")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-segments", type=int, help="stop after this many segments (default: the whole split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--corpus", help="evaluate on another corpus with the same tokenizer settings")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")


@command("eval", "evaluate a checkpoint under one or more memory plans; loss by position within the segment", _eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    from txl.budget import budget
    from txl.data import load_corpus
    from txl.evaluate import Plan, evaluate, metric_name, position_buckets
    from txl.table import format_table
    from txl.train import load_trained, pick_precision

    model, run, folder = load_trained(args.path, args.device, "best" if args.best else "last")
    if args.corpus:
        run.data.corpus = args.corpus
    corpus = load_corpus(run.data, progress=not args.no_progress)
    if corpus.vocab_size != run.model.vocab_size:
        raise TxlError(f"corpus {run.data.corpus!r} has {corpus.vocab_size} tokens, the model {run.model.vocab_size}")
    split = args.split or run.eval.split
    tgt_len = args.tgt_len or run.eval.tgt_len or run.train.tgt_len
    batch = args.batch_size or run.eval.batch_size
    same_length = args.same_length if args.same_length is not None else run.eval.same_length
    clamp = args.clamp_len if args.clamp_len is not None else (run.eval.clamp_len if run.eval.clamp_len is not None else "keep")
    plans = args.memory or [run.eval.memory]
    precision = pick_precision(run.train.precision, next(model.parameters()).device)
    results = []
    for text in plans:
        plan = Plan.parse(text or "as trained", run.model.n_layer, text, args.attn_range or run.eval.attn_range, same_length, clamp)
        out = evaluate(model, corpus, split, tgt_len, batch, args.max_segments, precision, not args.no_progress, plan)
        b = budget(plan.config(run.model), tgt_len)
        out.update(plan=text or "as trained", cached_positions=b.cached_positions, memory_mib=b.bytes / 2**20,
                   receptive_field=b.receptive_field[0])
        results.append(out)
    if args.json:
        print(json.dumps({"checkpoint": str(folder), "results": results}, indent=2))
        return 0
    metric = metric_name(corpus)
    print(f"checkpoint {folder}; {split} split, segments of {tgt_len}, {corpus.name} ({corpus.unit}s)")
    rows = [[r["plan"], r["cached_positions"], r["memory_mib"], r["receptive_field"], r.get(metric, r["loss"]), r["loss"], r["tokens"]]
            for r in results]
    print(format_table(["memory plan", "cached", "MiB/seq", "receptive field", metric, "loss (nats)", "tokens"], rows))
    buckets = [position_buckets(r["loss_by_position"]) for r in results]
    print()
    print("loss by position within the segment (more context to the right):")
    rows = [[r["plan"]] + [v for _, v in b] for r, b in zip(results, buckets)]
    print(format_table(["memory plan"] + [name for name, _ in buckets[0]], rows))
    return 0


# --------------------------------------------------------------------------- txl generate


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder or a checkpoint folder")
    p.add_argument("--prompt", default="", help="text to start from")
    p.add_argument("--tokens", type=int, default=300, help="how many tokens to sample (default 300)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


@command("generate", "sample text from a checkpoint, memory carried across chunks", _generate_args)
def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from txl.generate import generate_text, run_tokenizer
    from txl.train import load_trained

    if args.tokens < 1:
        raise TxlError("--tokens must be >= 1")
    if not 0 < args.top_p <= 1:
        raise TxlError("--top-p must be in (0, 1]")
    model, run, folder = load_trained(args.path, args.device)
    tokenizer = run_tokenizer(Path(args.path) if (Path(args.path) / "tokenizer").exists() else folder)
    sys.stdout.write(args.prompt)
    generate_text(
        model, tokenizer, args.prompt, args.tokens, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, chunk=run.train.tgt_len, on_piece=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()),
    )
    sys.stdout.write("\n")
    return 0


# --------------------------------------------------------------------------- experiments: run, list, report


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, e.g. 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="an experiment name (txl list), e.g. quickstart or rae2020/lrm-count")
    p.add_argument("--scale", choices=["tiny", "small", "paper"], default="small", help="small runs on a CPU; paper is the published size")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="run only shard I of N (a job array, several machines)")
    p.add_argument("--corpus", help="train on this corpus instead of the experiment's")
    p.add_argument("--steps", type=int, help="training steps per run")
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override the base config of every variant")
    p.add_argument("--no-progress", action="store_true")


@command("run", "run every variant of a named experiment; finished ones are skipped, interrupted ones resumed", _run_args)
def cmd_run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from txl.experiments import get_experiment, results_path, run_experiment
    from txl.report import build_report
    from txl.train import finish_distributed

    exp = get_experiment(args.name, args.scale)
    overrides = list(args.overrides)
    for flag, key in (("corpus", "data.corpus"), ("steps", "train.steps"), ("device", "train.device")):
        if getattr(args, flag):
            overrides.append(f"{key}={getattr(args, flag)}")
    root = Path(args.results)
    start = time.time()
    ok = False
    try:
        rows = run_experiment(exp, root, args.shard, overrides, progress=not args.no_progress)
        ok = True
    finally:
        finish_distributed(ok)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    mine = [r for r in rows if r["scale"] == exp.scale]
    report = build_report(mine, f"{exp.name} ({exp.scale}): {exp.description}", results_path(root, exp).parent, exp.x_axis)
    print()
    print(report["table"])
    print()
    print(f"finished in {time.time() - start:.0f} s; results {results_path(root, exp)}")
    print(f"plot         {report['files'].get('png')}")
    print(f"tensorboard  tensorboard --logdir {results_path(root, exp).parent}")
    return 0


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="a glob over experiment names, e.g. 'rae2020/*'")


@command("list", "named experiments, presets and attention variants", _list_args)
def cmd_list(args: argparse.Namespace) -> int:
    from txl.attention import VARIANTS
    from txl.experiments import list_experiments
    from txl.presets import PRESETS
    from txl.table import format_table

    found = list_experiments(args.pattern)
    if not found:
        raise TxlError(f"no experiment matches {args.pattern!r} (try 'txl list')")
    print(format_table(["experiment", "what it compares"], found))
    if args.pattern == "*":
        print()
        print(format_table(["preset", "what it is"], [[n, (fn.__doc__ or "").strip()] for n, fn in PRESETS.items()]))
        print()
        print(format_table(["attention", "what it does"], [[n, c.description] for n, c in VARIANTS.items()] + [["+fastrpb", "adds FastRPB's W V to any of them"]]))
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="an experiment name")
    p.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--x-axis", choices=["cached_positions", "long_range_positions", "memory_bytes", "attn_flops_per_token", "receptive_field"],
                   help="what quality is plotted against (default: the experiment's choice)")
    p.add_argument("--markdown", action="store_true", help="print the Markdown table")
    p.add_argument("--no-plot", action="store_true")


@command("report", "quality against memory budget from a results table: table, plot, Pareto frontier", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from txl.experiments import get_experiment, results_path
    from txl.io import read_jsonl
    from txl.report import build_report

    exp = get_experiment(args.name, args.scale)
    path = results_path(Path(args.results), exp)
    rows = [r for r in read_jsonl(path) if r.get("scale") == args.scale]
    if not rows:
        raise TxlError(f"no results at {path}; run 'txl run {args.name} --scale {args.scale}' first")
    report = build_report(rows, f"{exp.name} ({exp.scale}): {exp.description}", path.parent, args.x_axis or exp.x_axis, plot=not args.no_plot)
    print(report["markdown"] if args.markdown else report["table"])
    for kind, file in report["files"].items():
        print(f"{kind:<12} {file}")
    return 0


# --------------------------------------------------------------------------- interop: import, export


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a state dict: .safetensors, or .bin/.pt/.pth saved with torch.save(model.state_dict())")
    p.add_argument("--from", dest="layout", choices=["original", "transformers"], required=True,
                   help="original: Dai et al.'s MemTransformerLM; transformers: TransfoXLLMHeadModel")
    p.add_argument("--out", required=True, help="folder for the txl checkpoint (txl eval and txl generate read it)")
    p.add_argument("--config", metavar="JSON", help="the source's config (transformers config.json, or the original's arguments)")
    p.add_argument("--cutoffs", type=_int_list, help="adaptive softmax cutoffs, when the tensors cannot tell them")
    p.add_argument("--pre-lnorm", action="store_true", default=None, help="the source used pre-LayerNorm")
    p.add_argument("--mem-len", type=int, help="memory length to evaluate with (default: the source config's, else 512)")
    p.add_argument("--same-length", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--clamp-len", type=int)
    p.add_argument("--corpus", help="the corpus to evaluate on, e.g. wikitext-103")
    p.add_argument("--tokenizer", help="tokenizer: bytes, words, ..., or a vocabulary file (.txt word list in id order, txl .json, .model)")


@command("import", "read Transformer-XL weights (original or transformers layout) into a txl checkpoint", _import_args)
def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from txl.config import RunConfig, to_dict
    from txl.interop import import_state, read_state_dict
    from txl.memory import describe

    hints = {}
    if args.config:
        try:
            hints = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TxlError(f"cannot read --config {args.config}: {e}") from None
    for key, value in (("cutoffs", args.cutoffs), ("pre_lnorm", args.pre_lnorm), ("mem_len", args.mem_len),
                       ("same_length", args.same_length), ("clamp_len", args.clamp_len)):
        if value is not None:
            hints[key] = value
    tensors = read_state_dict(args.src)
    model = import_state(tensors, args.layout, hints)
    out = Path(args.out)
    from txl.checkpoint import find_checkpoint

    if find_checkpoint(out) is not None:
        raise TxlError(f"{out} already holds a checkpoint; choose another --out")
    run = RunConfig(model=model.cfg)
    run.train.tgt_len = int(hints.get("tgt_len") or 128)
    run.eval.tgt_len = run.train.tgt_len
    if args.corpus:
        run.data.corpus = args.corpus
    if args.tokenizer:
        run.data.tokenizer = str(Path(args.tokenizer).resolve()) if Path(args.tokenizer).suffix else args.tokenizer
    from txl.interop import write_txl_checkpoint

    folder = write_txl_checkpoint(model, out, to_dict(run), {"imported_from": str(args.src), "layout": args.layout})
    cfg = model.cfg
    print(f"imported {len(tensors)} tensors from {args.src} ({args.layout} layout) into {folder}")
    print(f"model      {cfg.n_layer} layers, d_model {cfg.d_model}, {cfg.n_head} heads of {cfg.d_head}, d_inner {cfg.d_inner}, "
          f"vocabulary {cfg.vocab_size:,}, cutoffs {cfg.cutoffs or 'none'}, div_val {cfg.div_val}, untie_r {cfg.untie_r}")
    print(f"parameters {model.num_params():,}; memory plan {describe(cfg)['memory']}")
    print(f"next       txl eval {out} --memory {max(cfg.mem_lens)} --memory lrm=2@interleave:{max(cfg.mem_lens)},srm=64")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder or checkpoint folder")
    p.add_argument("--to", dest="layout", choices=["original", "transformers"], required=True)
    p.add_argument("--out", required=True, help="folder to write model.safetensors (or pytorch_model.bin) and config.json into")
    p.add_argument("--format", choices=["safetensors", "bin"], default="safetensors",
                   help="bin: a torch.save'd state dict of tensors, for code that expects pytorch_model.bin")


@command("export", "write a txl model's weights in the original or transformers layout", _export_args)
def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from txl.interop import export_state
    from txl.io import atomic_path, atomic_write_json
    from txl.train import load_trained

    model, run, folder = load_trained(args.path, "cpu")
    tensors, config = export_state(model, args.layout)
    out = Path(args.out)
    target = out / ("model.safetensors" if args.format == "safetensors" else "pytorch_model.bin")
    with atomic_path(target) as tmp:
        if args.format == "safetensors":
            save_file(tensors, str(tmp))
        else:
            torch.save(tensors, tmp)
    atomic_write_json(out / "config.json", config)
    print(f"wrote {len(tensors)} tensors in the {args.layout} layout to {target}, and {out / 'config.json'}")
    return 0


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    from txl import __version__

    parser = Parser(
        prog="txl",
        description="Transformer-XL language models with per-layer memory plans: train, evaluate, and measure "
        "how much memory a model needs.",
        epilog="Run 'txl COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"txl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    first = ["run", "list", "report", "train", "eval", "generate", "budget", "data", "import", "export", "bench"]
    for name in sorted(COMMANDS, key=lambda n: first.index(n) if n in first else len(first)):
        help, add_args, _ = COMMANDS[name]
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        add_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command][2](args) or 0
    except TxlError as e:
        print(f"txl {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"\ntxl {args.command}: interrupted; files written so far are whole", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
