"""What training says as it goes: its banner, progress bar, budget row, pace, hparams, and the loss tally."""

from __future__ import annotations

import sys
import time

import torch

from txl.config import RunConfig
from txl.core.table import clock
from txl.data import Corpus
from txl.model.budget import budget
from txl.model.plans import describe


def progress_bar(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)


def budget_row(run: RunConfig, world: int, precision: str) -> dict:
    """The run's memory budget, logged once at step 0: per sequence, as tables and reports give it (positions
    and MiB), and the memory of the whole batch over every process beside it."""
    tc = run.train
    dtype = "bfloat16" if precision == "bf16" else "float32"
    b = budget(run.model, tc.tgt_len, 1, dtype)
    return {
        "step": 0,
        "cached_positions": b.cached_positions,
        "memory_mib": b.bytes / 2**20,
        "memory_mib_batch": b.bytes * tc.batch_size * world / 2**20,
        "params": b.params,
        "receptive_field": b.receptive_field[0],
    }


def banner(run: RunConfig, corpus: Corpus, params: int, where: str, resumed_at: int | None) -> str:
    """What is about to train, on what, where (`where`: device x processes, precision): printed once at the start."""
    tc = run.train
    capped = run.data.max_tokens and len(corpus.splits["train"]) >= run.data.max_tokens  # it did cut
    limit = f", capped at data.max_tokens={run.data.max_tokens:,}" if capped else ""
    return "\n".join(
        [
            f"{'training' if resumed_at is None else 'resuming'}  {params:,} parameters, {run.model.n_layer} layers, "
            f"memory {describe(run.model)['memory']}" + ("" if resumed_at is None else f" from step {resumed_at}"),
            f"device     {where}, batch {tc.batch_size} x {tc.tgt_len} tokens, {tc.steps:,} steps",
            f"data       {corpus.name} ({corpus.tokenizer.kind}): {len(corpus.splits['train']):,} training "
            f"{corpus.unit}s{limit}",
        ]
    )


def pace(step: int, steps: int, per_step: float) -> str:
    """The time left, said once when there is no progress bar to show it."""
    return (
        f"step {step} of {steps}: about {clock((steps - step) * per_step)} left at this pace ({per_step:.2f} s a step)"
    )


def hparams(run: RunConfig, corpus: str, final: dict) -> tuple[dict, dict]:
    """TensorBoard's hparams of a finished run: its settings, and its final metrics."""
    plan = describe(run.model)
    hp = {
        "memory": plan["memory"],
        "range": plan["range"],
        "attn": plan["attn"],
        "layers": run.model.n_layer,
        "d_model": run.model.d_model,
        "tgt_len": run.train.tgt_len,
        "lr": run.train.lr,
        "steps": run.train.steps,
        "corpus": corpus,
    }
    b = budget(run.model, run.train.tgt_len)
    metrics = {"hparam/final_loss": final["loss"], "hparam/cached_positions": b.cached_positions}
    for key in ("bpb", "bpc", "ppl", "accuracy"):
        if key in final:
            metrics[f"hparam/final_{key}"] = final[key]
    return hp, metrics


class LossTally:
    """The training loss summed on the device between two log rows (read only when a row is written)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss, self.steps, self.start = torch.zeros((), device=self.device), 0, time.time()

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so that the first row after a resume averages the same steps."""
        return {"loss": self.loss.detach().cpu(), "steps": self.steps, "seconds": self.seconds()}

    def load_state_dict(self, state: dict) -> None:
        self.loss, self.steps = state["loss"].to(self.device), state["steps"]
        self.start = time.time() - state["seconds"]

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss
        self.steps += 1

    def mean_loss(self) -> float:
        return float(self.loss) / self.steps

    def seconds(self) -> float:
        return time.time() - self.start


def training_notes(run: RunConfig, step: int) -> list[str]:
    """What a run is told before it trains: a warm-up as long as the run, sinks that would go stale."""
    tc, notes = run.train, []
    if tc.warmup >= tc.steps > step:
        notes.append(
            f"warning: train.warmup ({tc.warmup} steps) is as long as the run ({tc.steps}): the learning rate never "
            f"reaches train.lr ({tc.lr:g}); set a shorter warm-up"
        )
    if any(layer.sinks for layer in run.model.layers) and not tc.sink_refresh and tc.steps > step:
        notes.append(
            "note: the sinks are taken once per stream, at an epoch's start, so for the whole run they are states the "
            "initial weights made; --set train.sink_refresh=N takes them anew every N steps"
        )
    return notes
