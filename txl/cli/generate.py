"""txl generate: sample text from a checkpoint, memory carried across chunks."""

from __future__ import annotations

import argparse
import math
import sys

from txl.cli.args import command
from txl.core.errors import TxlError


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a run folder or a checkpoint folder")
    p.add_argument("--prompt", default="", help="text to start from")
    p.add_argument("--tokens", type=int, default=300, help="how many tokens to sample (default 300)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--tokenizer", metavar="FILE", help="the model's vocabulary (a vocab.json or .model), where its run has none"
    )


@command("generate", "sample text from a checkpoint, memory carried across chunks", _generate_args)
def cmd_generate(args: argparse.Namespace) -> int:
    from txl.evaluation.generate import generate_text
    from txl.train.runs import load_trained

    if args.tokens < 1:
        raise TxlError("--tokens must be >= 1")
    if not 0 < args.top_p <= 1:
        raise TxlError("--top-p must be in (0, 1]")
    if args.top_k < 0:
        raise TxlError(f"--top-k must be >= 0 (0 keeps every token), got {args.top_k}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise TxlError(f"--temperature must be a finite number > 0, got {args.temperature}")
    trained = load_trained(args.path, args.device)
    model, run = trained.model, trained.run
    tokenizer = trained.tokenizer(args.tokenizer)
    unknown = tokenizer.unk_id is not None and int((tokenizer.encode(args.prompt.encode()) == tokenizer.unk_id).sum())
    if unknown:
        print(
            f"note: {unknown} of the prompt's tokens are not in the model's vocabulary; it reads them as <unk>",
            file=sys.stderr,
        )
    sys.stdout.write(args.prompt)
    generate_text(
        model,
        tokenizer,
        args.prompt,
        args.tokens,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        chunk=run.train.tgt_len,
        on_piece=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()),
    )
    sys.stdout.write("\n")
    return 0
