"""Context ablation after Khandelwal et al. (2018): loss as the usable context is cut to d tokens, or the far
part shuffled or replaced; each run's effective context, and Dai et al.'s relative effective context length."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from txl.core.errors import TxlError
from txl.core.io import pyplot, save_figure, shown
from txl.core.table import render_table
from txl.data import Corpus
from txl.evaluation.evaluate import EvalSpec, autocast
from txl.model.transformer import TransformerXL

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
    Segments are cut from the window's end (the first one holds the remainder), so the scored tokens sit at
    the same positions of their segment for every d: a longer context reaches them through the same mix of
    segment and memory, never a different one. Every row carries `windows`, a hash of the text the windows
    hold, so that curves of several runs can be checked to be on the same text.
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
    text = hashlib.sha256(torch.stack([ids[e - span : e] for e in ends.tolist()]).numpy().tobytes()).hexdigest()[:16]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        for d in sorted(lengths):
            row = {"context": d, "windows": text}
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
    """(rows, score) losses (nats/token) of the last `score` targets of each row, read in segments with memory;
    the segments end at the row's end (see `segment_starts`)."""
    x, y = batch[:, :-1], batch[:, 1:]
    mems, losses = None, []
    bounds = [*segment_starts(x.size(1), segment), x.size(1)]
    with autocast(batch.device, precision):
        for start, stop in zip(bounds, bounds[1:]):
            nll, mems = model(x[:, start:stop], mems, y[:, start:stop])
            losses.append(nll.float())
    return torch.cat(losses, 1)[:, -score:]


def segment_starts(length: int, segment: int) -> list[int]:
    """Where the segments of a window of `length` inputs start when they are cut from its end: the last segment
    always ends at the window's end, the first holds what is left over."""
    first = length % segment
    return ([0] if first else []) + list(range(first, length, segment))


def effective_context_interval(
    rows: list[dict],
    tolerance: float = 0.01,
    score: int = 16,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[int, int, int]:
    """(effective context, lo, hi): the grid length as measured, and the percentile interval of the same over
    windows resampled with replacement (each window's `score` tokens together). It is read as "at most d on
    this grid": the true length lies at or below it, between it and the next shorter length measured."""
    per = np.array([r["cut_tokens"] for r in rows], dtype=np.float64)  # (lengths, windows * score)
    per = per.reshape(len(rows), -1, score).mean(-1)  # (lengths, windows): each window's loss
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, per.shape[1], per.shape[1])
        means = per[:, pick].mean(1)
        draws.append(effective_context([{"context": r["context"], "cut": m} for r, m in zip(rows, means)], tolerance))
    draws.sort()
    k = int(round((1 - level) / 2 * resamples))
    return effective_context(rows, tolerance), draws[k], draws[resamples - 1 - k]


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

    texts = {row.get("windows") for rows in curves.values() for row in rows}
    if len(texts) > 1:
        raise TxlError(
            "RECL compares runs on the same windows of the same text; these curves were measured on different text "
            "(another corpus, split, --windows or --lengths): run them in one 'txl analyze context' on one corpus"
        )
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
                label=f"{shown(name)}: {condition}" if len(curves) > 1 or condition != "cut" else shown(name),
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("usable context before the scored tokens (tokens; 0 drawn at 1/2)")
    ax.set_ylabel("loss on the scored tokens (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
