"""What autograd keeps for backward in one training segment, per attention path, counted on a CPU.

Peak training memory is mostly what the forward pass keeps for the backward pass. This counts it
exactly (saved-tensor hooks, each storage once) for one segment of a preset, with memory carried
from a first segment, at two batch sizes, and splits it into a fixed part (weights cast to the
autocast dtype) and a part per sequence, so the total at the preset's batch follows without a GPU.
The fused kernel is not run (Triton's interpreter would take minutes): its launches are skipped,
everything it allocates and keeps is counted. CPU dropout keeps its mask in the activation dtype,
where CUDA keeps one byte per element; the `dropout masks` column says how much of the total that is.

    python3 benchmarks/saved_activations.py --preset enwik8-base --impl plain,sdpa,fused
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TRITON_INTERPRET", "1")  # the fused path's checks pass on a CPU; its launches are skipped below

from txl.core.table import format_table  # noqa: E402
from txl.model.transformer import TransformerXL  # noqa: E402
from txl.train.presets import get_preset  # noqa: E402


class _Skip:
    """Stands in for a Triton kernel: indexing by a grid gives a launch that does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def kept(model: TransformerXL, batch: int, tgt_len: int, dtype: torch.dtype) -> tuple[int, int, collections.Counter]:
    """(bytes kept for backward, of which dropout masks, bytes by the op that keeps them) for one segment."""
    torch.manual_seed(0)
    tokens = torch.randint(0, model.cfg.vocab_size, (batch, 2 * tgt_len + 1))
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        _, mems = model(tokens[:, :tgt_len], model.init_mems(), tokens[:, 1 : tgt_len + 1])
    seen, by_op, total, masks = set(), collections.Counter(), 0, 0
    with torch.autocast("cpu", dtype=dtype):
        nll, _ = model(tokens[:, tgt_len:-1], mems, tokens[:, tgt_len + 1 :])
    stack, visited = [nll.grad_fn], set()
    while stack:  # every node of the backward graph and the tensors it keeps
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        tensors = [(a, getattr(node, a, None)) for a in dir(node) if a.startswith("_saved_")]
        tensors += [("saved", t) for t in (getattr(node, "saved_tensors", None) or ())]
        for attr, t in tensors:
            for tensor in t if isinstance(t, (list, tuple)) else [t]:
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in seen:
                    seen.add(tensor.untyped_storage().data_ptr())
                    nbytes = tensor.untyped_storage().nbytes()
                    total += nbytes
                    by_op[type(node).__name__.replace("Backward0", "")] += nbytes
                    if type(node).__name__ == "MulBackward0" and attr == "_saved_other" and tensor.dtype == dtype:
                        masks += nbytes  # nn.Dropout on a CPU: input * (mask / keep), the scaled mask kept
        stack.extend(nxt for nxt, _ in node.next_functions)
    return total, masks, by_op


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="enwik8-base")
    p.add_argument("--impl", default="plain,sdpa,fused")
    p.add_argument("--precision", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--batches", default="1,2", help="two batch sizes to fit fixed + per-sequence (default 1,2)")
    args = p.parse_args()
    run = get_preset(args.preset)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    small, large = (int(b) for b in args.batches.split(","))
    from txl.attention import fused

    fused._fwd = _Skip()
    rows, tops = [], {}
    for impl in [i.strip() for i in args.impl.split(",") if i.strip()]:
        run.model.attn_impl = impl
        model = TransformerXL(run.model).train()
        a, ma, _ = kept(model, small, run.train.tgt_len, dtype)
        b, mb, ops = kept(model, large, run.train.tgt_len, dtype)
        per_seq, per_mask = (b - a) / (large - small), (mb - ma) / (large - small)
        fixed = a - per_seq * small
        at = run.train.batch_size
        rows.append(
            [
                impl,
                f"{fixed / 2**20:.0f}",
                f"{per_seq / 2**20:.1f}",
                f"{(fixed + per_seq * at) / 2**30:.2f}",
                f"{per_mask * at / 2**30:.2f}",
                f"{(fixed + (per_seq - per_mask / 2) * at) / 2**30:.2f}",
            ]
        )
        tops[impl] = ", ".join(f"{op} {n / large / 2**20:.0f}" for op, n in ops.most_common(6))  # weights included
        print(f"{impl}: done", file=sys.stderr, flush=True)
    print(
        f"{args.preset}, {args.precision} autocast, one training segment of {run.train.tgt_len} tokens "
        f"with its memory; kept for backward (GiB at batch {run.train.batch_size}, "
        f"extrapolated from batches {small} and {large})"
    )
    print(
        format_table(
            [
                "impl",
                "fixed MiB",
                "MiB per sequence",
                f"GiB at {run.train.batch_size}",
                "of which dropout masks",
                "with 1-byte masks (CUDA)",
            ],
            rows,
            markdown=True,
        )
    )
    print()
    for impl, top in tops.items():
        print(f"- {impl}, MiB per sequence by op: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
