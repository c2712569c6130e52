"""txl train: train a language model into a run folder, or resume one."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from txl.cli.args import add_model_args, command
from txl.cli.configs import run_config_from_args
from txl.core.errors import TxlError


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="start from a named configuration (txl list shows them; default small)")
    p.add_argument(
        "--run-dir",
        help="where the run's config, logs, TensorBoard files and checkpoints go (default runs/PRESET-TIME)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from this run's (or import's) weights and settings, with a fresh optimizer; "
        "flags change the plan, corpus and training",
    )
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
    g.add_argument(
        "--stop-at-step", type=int, metavar="N", help="stop (with a checkpoint) after step N; --resume continues"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


RUN_FLAGS = {  # what --resume may be given beside the run folder; every other flag is checked against the run
    "preset", "config", "init_from", "run_dir", "resume", "stop_at_step", "no_progress", "command_line", "command",
    "steps",  # checked with the rest, and applied: it is one of RESUMABLE_KEYS
}  # fmt: skip


def _resumed(args: argparse.Namespace):
    """The run in --run-dir with the flags given applied: those that change only how long or how often
    (txl.train.runs.RESUMABLE_KEYS) are applied and recorded; a flag that changes what the run is is refused, named."""
    import copy

    from txl.train.runs import prepare_resume, resume_changes

    if args.preset or args.config:
        raise TxlError("--resume continues the run with its own settings; drop --preset and --config")
    saved = prepare_resume(Path(args.run_dir), [])
    asked = run_config_from_args(args, base=copy.deepcopy(saved))
    changed = resume_changes(saved, asked)
    if changed:
        given = [_flag(k) for k, v in vars(args).items() if k not in RUN_FLAGS and v not in (None, False, [])]
        raise TxlError(
            f"--resume continues {args.run_dir} as it was trained, but {' '.join(given)} would change "
            f"{'; '.join(changed[:4])}: drop {'it' if len(given) == 1 else 'them'}, or start a new run from its "
            f"weights with txl train --init-from {args.run_dir} --run-dir NEW ..."
        )
    return asked


def _adapted(args: argparse.Namespace):
    """The run --init-from starts: the source's settings under the adaptation recipe (txl.train.runs.adapt_recipe: a
    tenth of its learning rate, decayed over the run, warm-up within its first tenth), then the flags; said."""
    from txl.train.runs import adapt_recipe, init_from_config

    if args.preset or args.config:
        raise TxlError("--init-from starts from the source run's settings; give flags, not --preset or --config")
    base = init_from_config(args.init_from)
    source_lr = base.train.lr
    adapt_recipe(base.train, args.steps if args.steps is not None else base.train.steps)
    run = run_config_from_args(args, base=base)
    tc = run.train
    args.adapting = (
        f"adapting {args.init_from}: lr {tc.lr:g} (its own was {source_lr:g}), warm-up {tc.warmup} of {tc.steps} "
        f"steps, {tc.schedule} decay to {tc.min_lr:g} over the run; --lr and --set train.warmup=N choose otherwise"
    )
    return run


def _flag(dest: str) -> str:
    return {"attn_range": "--range", "overrides": "--set"}.get(dest, "--" + dest.replace("_", "-"))


@command(
    "train", "train a language model: memory carried across segments, checkpoints, TensorBoard, resume", _train_args
)
def cmd_train(args: argparse.Namespace) -> int:
    from txl.core.distributed import finish_distributed
    from txl.train.loop import Trainer

    if args.resume:
        if args.init_from:
            raise TxlError("--resume continues a run, which remembers where it started; drop --init-from")
        if not args.run_dir:
            raise TxlError("--resume needs --run-dir (the run folder to continue)")
        run = _resumed(args)
    elif args.init_from:
        run = _adapted(args)
    else:
        run = run_config_from_args(args)
    run_dir = Path(args.run_dir or Path("runs") / f"{args.preset or 'small'}-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = Trainer(run, run_dir, resume=args.resume, progress=not args.no_progress, command=args.command_line)
    if trainer.dist.main:
        if getattr(args, "adapting", None):  # said once the run is set up: a refused one says only why
            print(args.adapting, file=sys.stderr)
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
    print(
        f"step {result['step']}: {run.eval.split} {metric} {final.get(metric, final['loss']):.4f} "
        f"(loss {final['loss']:.4f} nats/token over {final['tokens']:,} tokens)"
    )
    print(f"run folder   {run_dir}")
    print(f"tensorboard  tensorboard --logdir {run_dir}")
    return 0
