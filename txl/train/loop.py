"""The training loop: segments in stream order, memory carried from step to step.

Everything a step depends on (weights, optimizer, data position, RNG, memory) is
committed together at the end of the step, so a checkpoint, written on schedule or
on Ctrl-C, resumes exactly where training stopped. The pieces live beside this
module: the step and schedule in optim.py, the run folder in runs.py, devices and
random state in devices.py, several processes in distributed.py.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from txl.attention.fast import resolve_impl
from txl.config import RunConfig
from txl.core.devices import capture_rng, pick_device, pick_precision, restore_rng
from txl.core.distributed import setup_distributed
from txl.core.errors import TxlError
from txl.core.signals import StopRequests, held_interrupts
from txl.data import Corpus, load_corpus
from txl.data.corpora import cache_root
from txl.evaluation.evaluate import LN2, EvalResult, EvalSpec, evaluate, metric_name, scalars
from txl.model.budget import ensure_fits
from txl.model.cache import without_sinks
from txl.model.plans import check_run
from txl.model.transformer import TransformerXL
from txl.train import checkpoint as ckpt
from txl.train.log import LossTally, banner, budget_row, hparams, pace, progress_bar, training_notes
from txl.train.optim import TrainStep, lr_at
from txl.train.runs import RunFolder


def due(step: int, every: int) -> bool:
    """Whether a thing done every `every` steps (0: never on schedule) is due after `step`."""
    return every > 0 and step % every == 0


class Trainer:
    """Trains `run` into `run_dir`; `fit()` returns the final metrics."""

    def __init__(
        self,
        run: RunConfig,
        run_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        command: str | None = None,
        resume_hint: str | None = None,
    ):
        self.run, self.progress = run, progress
        # what continues this run after a stop: by default its own resume; a sweep names itself
        self.resume_hint = resume_hint or f"txl train --run-dir {run_dir} --resume"
        tc = run.train
        self.dist = setup_distributed(tc.device)
        self.device = pick_device(tc.device, self.dist.local_rank)
        self.precision = pick_precision(tc.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tc.tf32
            torch.backends.cudnn.allow_tf32 = tc.tf32
        if run.model.attn_impl == "flex" and self.device.type != "cuda":
            raise TxlError(
                "model.attn_impl=flex cannot train on a CPU (FlexAttention has no backward pass there); "
                "use plain or sdpa, or train on a GPU"
            )
        if run.model.attn_impl == "fused":
            resolve_impl("fused", self.device)  # refused here, before a run folder is made, where it cannot run
        self.folder = RunFolder(run_dir, writes=self.dist.main)
        self.folder.lock()  # before anything is read or written: a second writer is refused, naming this one
        try:
            self._set_up(resume, command)
        except BaseException:
            self.folder.unlock(remove_if_unused=True)
            raise

    def _set_up(self, resume: bool, command: str | None) -> None:
        """Data, model, optimizer and the committed state: fresh, or read back from the last checkpoint."""
        run, progress, tc = self.run, self.progress, self.run.train
        existing = ckpt.find_checkpoint(self.folder.path)
        if existing is not None and not resume:
            raise TxlError(
                f"{self.folder.path} already holds a run; continue it with --resume, or choose another --run-dir"
            )
        if resume and existing is None:
            raise TxlError(f"nothing to resume in {self.folder.path}: it has no checkpoint")

        if not resume and run.data.root is None:  # one data root for the run, wherever it is evaluated from later
            run.data.root = str(cache_root(run.data).resolve())
        # data: rank 0 builds the token cache, the others then read it
        if not self.dist.main:
            self.dist.barrier()
        self.corpus: Corpus = load_corpus(run.data, progress=progress and self.dist.main, verify=self.dist.main)
        if self.dist.main:
            self.dist.barrier()
        run.model.vocab_size = self.corpus.vocab_size
        check_run(run)
        ensure_fits(run.model, tc.tgt_len, tc.batch_size // tc.grad_accum, self.device)  # refused early, estimated
        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        self.model = TransformerXL(run.model).to(self.device)
        if tc.init_from and not resume:  # a resumed run reads its own checkpoint below
            self._start_from(Path(tc.init_from))
        net = torch.compile(self.model) if tc.compile else self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        loss_on_mask = tc.loss_on == "mask" or (tc.loss_on == "auto" and self.corpus.masks is not None)
        with held_interrupts():  # the optimizer imports torch._dynamo, which a Ctrl-C would abort
            self.step_fn = TrainStep(self.model, net, tc, self.device, self.precision, self.dist.world, loss_on_mask)
        self.stream = self.corpus.stream(
            "train",
            tc.batch_size,
            tc.tgt_len,
            rank=self.dist.rank,
            world=self.dist.world,
            shuffle=tc.shuffle_streams,
            seed=tc.seed,
            device=self.device,
        )
        # the committed state: what a checkpoint holds
        self.step, self.epoch, self.index = 0, 0, 0
        self.mems: list = [None] * tc.grad_accum
        self.best_valid = math.inf
        self.interval = LossTally(self.device)  # the training loss since the last log row
        torch.manual_seed(tc.seed + 1 + self.dist.rank)  # dropout differs per rank, as each sees other data
        self.rng = capture_rng(self.device)
        if resume:
            self._continue(existing, command)
        else:
            self.folder.start(run, self.corpus, command)
        self.folder.open_tensorboard()
        for note in training_notes(run, self.step):
            self._say(note)
        where = f"{self.device} x {self.dist.world}, {self.precision}"
        self._say(banner(self.run, self.corpus, self.model.num_params(), where, self.step if resume else None))

    # ------------------------------------------------------------------ the loop

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to train.steps (or stop after step `stop_at`, e.g. to test resuming); evaluate; save."""
        try:
            return self._fit(stop_at)
        finally:
            self.folder.unlock()

    def _fit(self, stop_at: int | None) -> dict:
        tc = self.run.train
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        restore_rng(self.rng, self.device)
        if self.step == 0:
            self.folder.log(budget_row(self.run, self.dist.world, self.precision), "budget")
        bar = progress_bar(tc.steps, self.step) if self.progress and self.dist.main else None
        self._paced_from, self._next_pace = (time.time(), self.step), 0  # the pace of steps, not of setting up
        segments = self.stream.forever(self.epoch, self.index)
        last_row: dict = {}
        try:
            with StopRequests() as stop:
                while self.step < end:
                    segment = next(segments)
                    mems = (
                        [None] * tc.grad_accum if segment.index == 0 else self.mems
                    )  # a new epoch restarts the streams
                    if tc.sink_refresh and self.step % tc.sink_refresh == 0:  # sinks of the weights as they are now
                        mems = without_sinks(mems)
                    loss, norm, mems = self.step_fn(segment, mems, self.step)
                    self._commit(segment, mems, loss)
                    if bar is not None:
                        bar.update(1)
                    if due(self.step, tc.log_every) or self.step == tc.steps:
                        last_row = self._log_train(norm, bar)
                    names = []
                    if due(self.step, tc.eval_every) and self.step < tc.steps:
                        names += self._evaluate_and_track()
                    if due(self.step, tc.save_every):
                        names.append("last")
                    stopping = self.dist.any(stop.requested)  # every rank stops after the same step
                    if stopping:
                        names.append("last")
                    if names:
                        self._save(tuple(names))
                    self.step_fn.updating = False  # the step, its log row and its saves are whole
                    if stopping:
                        self._say(f"stopped after step {self.step}, saved; continue with: {self.resume_hint}")
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            # Stopped at once (a second signal): the step in flight is discarded and the committed state saved,
            # unless the update or its bookkeeping had begun (then the last whole checkpoint stands), or other
            # ranks may be anywhere (a save is a collective, so it is left to the last whole checkpoint too).
            if not self.step_fn.updating and self.dist.world == 1:
                self._save(("last",))
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.step < tc.steps:  # stopped early on purpose: keep the place
            self._save(("last",))
            return {"step": self.step, "train": last_row}
        self._save(tuple(self._evaluate_and_track() + ["last"]))
        return self._finish(last_row)

    def _commit(self, segment, mems: list, loss: torch.Tensor) -> None:
        """The step is done: everything needed to continue from here becomes the state a checkpoint holds."""
        self.interval.add(loss)
        self.step += 1
        self.epoch, self.index = segment.epoch, segment.index + 1
        if self.index >= len(self.stream):
            self.epoch, self.index = self.epoch + 1, 0
        self.mems = mems
        self.rng = capture_rng(self.device)

    # ------------------------------------------------------------------ evaluation

    def validate(self) -> EvalResult:
        """Validation during training, with the segment length of the final evaluation so the numbers compare."""
        spec = EvalSpec.for_run(self.run, self.device)
        return evaluate(
            self.model, self.corpus, replace(spec, split="valid", max_segments=self.run.train.eval_segments)
        )

    def _evaluate_and_track(self) -> list[str]:
        """Validate (rank 0), log, and say whether this is the best checkpoint so far."""
        names = []
        if self.dist.main:
            row = self.validate()
            self.folder.log({"step": self.step, **row.scalars()}, "valid")
            if row.loss < self.best_valid:
                self.best_valid = row.loss
                names.append("best")
        return self.dist.broadcast(names)

    def _finish(self, last_row: dict) -> dict:
        """The final evaluation with the run's evaluation settings; result.json and TensorBoard's hparams."""
        final = None
        if self.dist.main:
            spec = EvalSpec.for_run(self.run, self.device)
            final = evaluate(self.model, self.corpus, spec, spec.plan, self.progress).to_dict()
            self.folder.write_json("eval.json", final)
            self.folder.log({"step": self.step, **scalars(final)}, spec.split)
        result = {
            "step": self.step,
            "metric": metric_name(self.corpus),
            "train": last_row,
            "valid_best_loss": self.best_valid,
            "final": final,
            "data": self.corpus.identity(),
        }
        if self.dist.main:
            self.folder.write_json("result.json", result)
            self.folder.hparams(*hparams(self.run, self.corpus.name, final))
            self.folder.close()
        return result

    # ------------------------------------------------------------------ checkpoints

    def _save(self, names: tuple[str, ...]) -> None:
        """Write the committed state (end of the last finished step); every rank's memory goes to rank 0."""
        gathered = self.dist.gather(
            {"mems": ckpt.flatten_memory(self.mems), "rng": self.rng, "interval": self.interval.state_dict()}
        )
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "index": self.index,
            "world": self.dist.world,
            "best_valid": self.best_valid,
            "interval": [g["interval"] for g in gathered],  # each rank's own loss since its last row
            **self.step_fn.state_dict(),
            "mems": [g["mems"] for g in gathered],
            "rng": [g["rng"] for g in gathered],
        }
        meta = {"metric": metric_name(self.corpus), "best_valid_loss": self.best_valid, "time": time.time()}
        self.folder.save(self.step, self.model, state, self.run, meta, names)

    def _continue(self, existing: Path, command: str | None) -> None:
        """Resume from the last checkpoint; settings changed on resume (--steps) are said and recorded."""
        self._resume(existing)
        self.folder.rewind(self.step)
        self.folder.note_resume(self.step, command)
        for change in self.folder.record_changes(self.run):  # e.g. --steps: the run now ends elsewhere, for good
            self._say(f"resume changes {change} (recorded in config.json)")
        if self.step >= self.run.train.steps:
            self._say(f"the run is at step {self.step}, train.steps is {self.run.train.steps}: nothing to train")

    def _start_from(self, folder: Path) -> None:
        """A fresh run's first weights, read from another run's checkpoint (train.init_from)."""
        if not (folder / "model.safetensors").is_file():
            raise TxlError(f"train.init_from: no checkpoint in {folder} (model.safetensors is missing)")
        try:
            fresh = ckpt.load_weights(self.model, folder, fresh=".compressor.")
        except TxlError as e:
            raise TxlError(
                f"--init-from: {e}; keep the source's widths, layers, vocabulary and attention variants "
                "(memory, range, dtype, sink and compression plans may change)"
            ) from None
        if fresh:  # a learned compression the source did not have: it starts from its initial weights
            self._say(f"init-from: {len(fresh)} compressor tensors the source lacks start fresh ({fresh[0]}, ...)")

    def _resume(self, folder: Path) -> None:
        ckpt.load_weights(self.model, folder)
        state = ckpt.load_state(folder)
        if state["world"] != self.dist.world:
            raise TxlError(
                f"the checkpoint was written by {state['world']} processes, this run has {self.dist.world}; "
                "resume with the same number"
            )
        self.step_fn.load_state_dict(state)
        self.step, self.epoch, self.index = state["step"], state["epoch"], state["index"]
        self.best_valid = state["best_valid"]
        if "interval" in state:
            self.interval.load_state_dict(state["interval"][self.dist.rank])
        self.mems = ckpt.unflatten_memory(
            state["mems"][self.dist.rank], self.run.train.grad_accum, self.run.model.n_layer, self.device
        )
        self.rng = state["rng"][self.dist.rank]

    # ------------------------------------------------------------------ logging

    def _say(self, text: str) -> None:
        if self.dist.main:
            print(text, file=sys.stderr, flush=True)

    def _log_train(self, norm: torch.Tensor, bar) -> dict:
        """The mean loss since the last row (over all ranks), throughput and the rest; starts the next interval."""
        tc, interval = self.run.train, self.interval
        mean_loss = self.dist.mean(interval.mean_loss(), self.device)
        tokens = tc.batch_size * tc.tgt_len * self.dist.world * interval.steps
        row = {
            "step": self.step,
            "loss": mean_loss,
            "bits": mean_loss / LN2,
            "lr": lr_at(self.step - 1, tc),
            "grad_norm": float(norm),
            "tokens_per_s": tokens / max(interval.seconds(), 1e-9),
            "epoch": self.epoch,
        }
        self.folder.log(row, "train")
        if bar is not None:
            bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
        elif self.step < tc.steps and self.step >= self._next_pace:  # each tenth of the run, without a bar
            self._next_pace = self.step + max(1, tc.steps // 10)
            since, at = self._paced_from
            self._say(pace(self.step, tc.steps, (time.time() - since) / max(self.step - at, 1)))
        interval.reset()
        return row
