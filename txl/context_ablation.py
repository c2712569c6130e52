"""Context ablation after Khandelwal et al. (2018): loss as the usable context is cut to d tokens, or the far
part shuffled or replaced; each run's effective context, and Dai et al.'s relative effective context length."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from txl.data import Corpus
from txl.errors import TxlError
from txl.evaluate import EvalSpec, autocast
from txl.io import pyplot, save_figure
from txl.model import TransformerXL
from txl.table import render_table

CONDITIONS = ("cut", "shuffled", "random")


@torch.no_grad()
def context_curve(
    model: TransformerXL,
    corpus: Corpus,
    spec: EvalSpec,
    lengths: list[int],
    score: int = 16,
    windows: int = 64,
    seed: int = 0,
) -> list[dict]:
    """Loss on the last `score` tokens of a window as the usable context before them is limited to d tokens.

    After Khandelwal et al. (2018): `cut` gives the model only the d nearest tokens; `shuffled`
    keeps the farther ones (up to the largest d) in a random order; `random` replaces them by
    text from elsewhere in the split. The text (`spec.split`) is read in segments of `spec.tgt_len` tokens
    with the model's own memory plan, as in training; the same windows serve every d and condition.
    """
    split, segment, precision = spec.split, spec.tgt_len, spec.precision
    ids = torch.as_tensor(np.asarray(corpus.splits[split], dtype=np.int64))
    far = max(lengths)
    span = far + score + 1
    if len(ids) < 2 * span:
        raise TxlError(
            f"the {split} split has {len(ids):,} tokens, too few for windows of {span:,}; use smaller --lengths"
        )
    g = torch.Generator().manual_seed(seed)
    ends = torch.randint(span, len(ids), (windows,), generator=g)
    donors = torch.randint(0, len(ids) - far, (windows,), generator=g)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        for d in sorted(lengths):
            row = {"context": d}
            for condition in CONDITIONS:
                if condition != "cut" and d == far:
                    row[condition] = row["cut"]  # nothing farther to disturb
                    continue
                width = d + score + 1 if condition == "cut" else span
                batch = torch.stack([ids[e - width : e] for e in ends.tolist()])
                if condition != "cut" and far > d:
                    n_far = far - d
                    for b in range(windows):
                        if condition == "shuffled":
                            batch[b, :n_far] = batch[b, :n_far][torch.randperm(n_far, generator=g)]
                        else:
                            batch[b, :n_far] = ids[donors[b] : donors[b] + n_far]
                tokens = _last_loss(model, batch.to(device), score, segment, precision)
                row[condition] = float(tokens.mean())
                if condition == "cut":
                    row["cut_tokens"] = [round(v, 6) for v in tokens.flatten().tolist()]  # for RECL across runs
            rows.append(row)
    finally:
        model.train(was_training)
    return rows


def _last_loss(model: TransformerXL, batch: torch.Tensor, score: int, segment: int, precision: str) -> torch.Tensor:
    """(rows, score) losses (nats/token) of the last `score` targets of each row, read in segments with memory."""
    x, y = batch[:, :-1], batch[:, 1:]
    mems, losses = None, []
    with autocast(batch.device, precision):
        for start in range(0, x.size(1), segment):
            nll, mems = model(x[:, start : start + segment], mems, y[:, start : start + segment])
            losses.append(nll.float())
    return torch.cat(losses, 1)[:, -score:]


def effective_context(rows: list[dict], tolerance: float = 0.01) -> int:
    """The shortest context from which on every `cut` loss is within `tolerance` nats of the longest context's."""
    full = rows[-1]["cut"]
    d = rows[-1]["context"]
    for r in reversed(rows):
        if abs(r["cut"] - full) > tolerance:
            break
        d = r["context"]
    return d


def recl(curves: dict[str, list[dict]], r: float = 0.1, threshold: float = 0.01) -> dict[str, tuple[int, bool]]:
    """Relative effective context length (Dai et al. 2019, appendix C) of each run in a group scored on the same
    tokens: stepping c -> c' along the measured lengths, the baseline b(c, t) is the least loss of any run at
    context c on token t, T the fraction r of tokens where b is largest, and run i's relative loss
    f_i(c, c') = mean over T of min(b(c, t), l_i(c', t)). RECL is the first c whose relative gain
    (exp f_i(c, c) - exp f_i(c, c')) / exp f_i(c, c) falls under `threshold`; (c, True) when it never does
    (a lower bound: the longest length measured). The paper steps by a fixed amount; here the step is the
    next length of the grid."""
    import numpy as np

    lengths = sorted(set.intersection(*[{row["context"] for row in rows} for rows in curves.values()]))
    loss = {name: {row["context"]: np.asarray(row["cut_tokens"]) for row in rows} for name, rows in curves.items()}
    if len({v.size for per in loss.values() for v in per.values()}) != 1:
        raise TxlError("RECL needs every run scored on the same tokens (the same corpus, split, windows and --score)")
    out = {}
    for name in curves:
        found = (lengths[-1], True)
        for c, c2 in zip(lengths, lengths[1:]):
            base = np.min([loss[m][c] for m in curves], axis=0)
            chosen = np.argsort(base)[-max(1, int(round(r * base.size))) :]
            short = math.exp(base[chosen].mean())  # f_i(c, c): min(b, l_i(c)) is b itself
            long = math.exp(np.minimum(base, loss[name][c2])[chosen].mean())
            if (short - long) / short < threshold:
                found = (c, False)
                break
        out[name] = found
    return out


def context_table(curves: dict[str, list[dict]], fmt: str = "text") -> str:
    headers = ["run", "context (tokens)", "loss: cut", "loss: far shuffled", "loss: far random"]
    return render_table(
        headers,
        [[name, r["context"], r["cut"], r["shuffled"], r["random"]] for name, rows in curves.items() for r in rows],
        fmt,
    )


def plot_context(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for n, (name, rows) in enumerate(curves.items()):
        xs = [max(r["context"], 0.5) for r in rows]  # 0 drawn at 0.5 on the log axis
        for condition, style in zip(CONDITIONS, ("-", "--", ":")):
            ax.plot(
                xs,
                [r[condition] for r in rows],
                style,
                marker="o",
                color=f"C{n}",
                markersize=3,
                label=f"{name}: {condition}" if len(curves) > 1 or condition != "cut" else name,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("usable context before the scored tokens (tokens; 0 drawn at 1/2)")
    ax.set_ylabel("loss on the scored tokens (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
