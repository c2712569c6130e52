"""txl data: list corpora, prepare their token caches, show their statistics."""

from __future__ import annotations

import argparse
import time

from txl.cli.args import Parser, add_data_args, add_overrides, command
from txl.cli.configs import data_config_from_args


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser, required=True)
    sub.add_parser("list", help="the known corpora, their sizes, licences and splits")
    for name, help in (
        ("stats", "split sizes, vocabulary and token counts (downloads and tokenizes if needed)"),
        ("prepare", "download and tokenize a corpus into the cache"),
        (
            "verify",
            "check a corpus's token cache in full (checksums, ids within the vocabulary); rebuild it if damaged",
        ),
    ):
        q = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        add_data_args(q)
        add_overrides(q, help="e.g. data.min_freq=3")


@command("data", "corpora: list them, prepare their token caches, show their statistics", _data_args)
def cmd_data(args: argparse.Namespace) -> int:
    from txl.config import RunConfig, apply_overrides
    from txl.data import load_corpus
    from txl.data.corpora import corpora_table

    if args.data_command == "list":
        print(corpora_table())
        print("\nA path to a file or folder works too, in place of a name (see data/README.md for how it is split).")
        return 0
    run = RunConfig()
    run.data = data_config_from_args(args)
    apply_overrides(run, args.overrides)
    start = time.time()
    corpus = load_corpus(run.data.validate(), verify=args.data_command == "verify")
    seconds = time.time() - start
    if args.data_command == "verify":
        print(f"{corpus.name}: {corpus.cache_dir or 'generated in memory'} verified in {seconds:.1f} s")
        return 0
    if args.data_command == "prepare":
        print(f"{corpus.name}: ready in {seconds:.1f} s ({corpus.cache_dir or 'generated in memory'})")
        return 0
    print(corpus.stats_table())
    print()
    print(f"corpus      {corpus.name}: {corpus.source}")
    print(f"tokenizer   {corpus.tokenizer.kind}, vocabulary {corpus.vocab_size:,} ({corpus.splits['train'].dtype} ids)")
    print(f"cache       {corpus.cache_dir or 'none (generated in memory)'}")
    print(f"loaded in   {seconds:.2f} s")
    return 0
