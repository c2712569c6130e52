"""The training loop: segments in stream order, memory carried from step to step.

One step takes the next segment of every stream. With grad_accum k the batch is
split into k groups of streams, each with its own memory, processed one after the
other (the original's batch_chunk): the gradient is the same, the peak memory lower.
Everything a step depends on (weights, optimizer, data position, RNG, memory) is
committed together at the end of the step, so a checkpoint, written on schedule or
on Ctrl-C, resumes exactly where training stopped. Under torchrun each process reads
its own streams and keeps its own memory; rank 0 writes the files.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from txl import checkpoint as ckpt
from txl.budget import budget
from txl.config import ConfigError, RunConfig, from_dict, save_config, to_dict
from txl.data import Corpus, load_corpus
from txl.errors import TxlError
from txl.evaluate import LN2, Plan, autocast, evaluate, metric_name
from txl.io import append_line, atomic_write_json
from txl.model import TransformerXL

RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.eval_every", "train.save_every", "train.eval_segments")


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank; safe to use while rank 0 works alone for a long time."""
        if self.world > 1:
            dist.barrier(group=_control_group())

    def mean(self, value: float, device: torch.device) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t) / self.world


# Rank 0 works alone at times (building the token cache, validating, evaluating memory
# plans in a sweep) while the others wait. Those waits go through a CPU (gloo) group
# with a long timeout, so a slow evaluation never trips the NCCL watchdog; the default
# group's own timeout keeps watching the training collectives.
WAIT_TIMEOUT_HOURS = 24.0
_CONTROL = None


def _control_group():
    global _CONTROL
    if _CONTROL is None:
        from datetime import timedelta

        _CONTROL = dist.new_group(backend="gloo", timeout=timedelta(hours=WAIT_TIMEOUT_HOURS))
    return _CONTROL


def finish_distributed(ok: bool) -> None:
    """Leave the process group, all ranks together (the way torch.distributed asks for).

    After a failure on this rank the others may never arrive, so then the group is only
    torn down locally and torchrun stops the rest.
    """
    global _CONTROL
    if not dist.is_initialized():
        return
    if ok and dist.get_world_size() > 1:
        dist.barrier(group=_control_group())
    _CONTROL = None
    dist.destroy_process_group()


def setup_distributed(device_name: str) -> Distributed:
    """Join the process group that torchrun describes in the environment (nothing to do for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        _control_group()  # every rank creates it now, in the same order
    return Distributed(rank, world, local)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TxlError(f"train.device={name} but this machine has no CUDA device; use cpu or auto")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise TxlError("train.precision=fp16 needs a GPU; on a CPU use fp32 or bf16")
    return name


def lr_at(step: int, cfg) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then the schedule down to min_lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "linear":
        return cfg.lr + (cfg.min_lr - cfg.lr) * progress
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    betas = tuple(cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    try:
        from timm.optim import Lamb
    except ImportError:
        raise TxlError("train.optimizer=lamb needs timm, which maintains a LAMB optimizer (pip install timm); or use adam/adamw") from None
    return Lamb(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


def capture_rng(device: torch.device) -> dict:
    out = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Trainer:
    """Trains `run` into `run_dir`; `fit()` returns the final metrics."""

    def __init__(self, run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, command: str | None = None):
        self.run, self.run_dir, self.progress = run, Path(run_dir), progress
        self.dist = setup_distributed(run.train.device)
        self.device = pick_device(run.train.device, self.dist.local_rank)
        self.precision = pick_precision(run.train.precision, self.device)
        tc = run.train
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tc.tf32
            torch.backends.cudnn.allow_tf32 = tc.tf32
        existing = ckpt.find_checkpoint(self.run_dir)
        if existing is not None and not resume:
            raise TxlError(f"{self.run_dir} already holds a run; continue it with --resume, or choose another --run-dir")
        if resume and existing is None:
            raise TxlError(f"nothing to resume in {self.run_dir}: it has no checkpoint")

        # data: rank 0 builds the token cache, the others then read it
        if not self.dist.main:
            self.dist.barrier()
        self.corpus: Corpus = load_corpus(run.data, progress=progress and self.dist.main)
        if self.dist.main:
            self.dist.barrier()
        if run.model.vocab_size != self.corpus.vocab_size:
            run.model.vocab_size = self.corpus.vocab_size
        run.validate()
        self.loss_on_mask = tc.loss_on == "mask" or (tc.loss_on == "auto" and self.corpus.masks is not None)

        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        self.model = TransformerXL(run.model).to(self.device)
        self.net = self.model
        if tc.compile:
            self.net = torch.compile(self.model)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = make_optimizer(self.model, tc)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.stream = self.corpus.stream(
            "train", tc.batch_size, tc.tgt_len, rank=self.dist.rank, world=self.dist.world,
            shuffle=tc.shuffle_streams, seed=tc.seed, device=self.device,
        )
        self.chunks = tc.grad_accum
        self.step, self.epoch, self.index = 0, 0, 0
        self.mems: list = [None] * self.chunks
        self.best_valid = math.inf
        torch.manual_seed(tc.seed + 1 + self.dist.rank)  # dropout differs per rank, as each sees other data
        self.rng = capture_rng(self.device)
        if resume:
            self._resume(existing)
        elif self.dist.main:
            self._start_run_folder(command)
        self.writer = None
        if self.dist.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    # ------------------------------------------------------------------ files

    def _start_run_folder(self, command: str | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)  # left by an attempt that died before its first checkpoint
        save_config(self.run, self.run_dir / "config.json")
        (self.run_dir / "command.txt").write_text((command or " ".join(shlex.quote(a) for a in sys.argv)) + "\n")
        tok_dir = self.run_dir / "tokenizer"
        tok_dir.mkdir(exist_ok=True)
        if self.corpus.cache_dir is not None:
            for name in ("vocab.json", "sp.model"):
                if (self.corpus.cache_dir / name).exists():
                    (tok_dir / name).write_bytes((self.corpus.cache_dir / name).read_bytes())
        else:
            self.corpus.tokenizer.save(tok_dir / "vocab.json")

    def _resume(self, folder: Path) -> None:
        ckpt.load_weights(self.model, folder)
        state = ckpt.load_state(folder)
        if state["world"] != self.dist.world:
            raise TxlError(f"the checkpoint was written by {state['world']} processes, this run has {self.dist.world}; resume with the same number")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.index = state["step"], state["epoch"], state["index"]
        self.best_valid = state["best_valid"]
        self.mems = ckpt.unflatten_memory(state["mems"][self.dist.rank], self.chunks, self.run.model.n_layer, self.device)
        self.rng = state["rng"][self.dist.rank]

    def _save(self, names: tuple[str, ...]) -> None:
        """Write the committed state (end of the last finished step); every rank's memory goes to rank 0."""
        local = {"mems": ckpt.flatten_memory(self.committed_mems), "rng": self.rng}
        gathered = [local]
        if self.dist.world > 1:
            gathered = [None] * self.dist.world
            dist.all_gather_object(gathered, local)
        if not self.dist.main:
            return
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "index": self.index,
            "world": self.dist.world,
            "best_valid": self.best_valid,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "mems": [g["mems"] for g in gathered],
            "rng": [g["rng"] for g in gathered],
        }
        meta = {"metric": metric_name(self.corpus), "best_valid_loss": self.best_valid, "time": time.time()}
        ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, self.model, state, to_dict(self.run), meta, names)

    def _log(self, row: dict, prefix: str) -> None:
        if not self.dist.main:
            return
        append_line(self.run_dir / "metrics.jsonl", json.dumps({"kind": prefix, **row}))
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, row["step"])

    # ------------------------------------------------------------------ one step

    def _train_step(self, segment) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; the loss and gradient norm stay on the device (reading them would wait for it)."""
        tc = self.run.train
        rows = segment.inputs.size(0) // self.chunks
        weights = segment.mask.float() if (self.loss_on_mask and segment.mask is not None) else None
        total = weights.sum().clamp(min=1.0) if weights is not None else segment.targets.numel()
        new_mems = []
        loss_value = torch.zeros((), device=self.device)
        for c in range(self.chunks):
            part = slice(c * rows, (c + 1) * rows)
            sync_scope = self.net.no_sync() if (self.dist.world > 1 and c < self.chunks - 1) else _null()
            with sync_scope:
                with autocast(self.device, self.precision):
                    nll, mems = self.net(segment.inputs[part], self.mems[c], segment.targets[part])
                w = weights[part] if weights is not None else None
                loss = ((nll * w) if w is not None else nll).sum() / total
                self.scaler.scale(loss).backward()
            loss_value += loss.detach().float()
            new_mems.append(mems)
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip if tc.clip > 0 else math.inf)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, tc)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.mems = new_mems
        return loss_value, norm

    # ------------------------------------------------------------------ the loop

    def validate(self) -> dict:
        tc = self.run.train
        return evaluate(
            self.model, self.corpus, "valid", tc.tgt_len, self.run.eval.batch_size, tc.eval_segments, self.precision
        )

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to train.steps (or stop after step `stop_at`, e.g. to test resuming); evaluate; save."""
        tc = self.run.train
        metric = metric_name(self.corpus)
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        restore_rng(self.rng, self.device)
        self.committed_mems = self.mems
        if self.step == 0 and self.dist.main:
            b = budget(self.run.model, tc.tgt_len, tc.batch_size * self.dist.world, "bfloat16" if self.precision == "bf16" else "float32")
            self._log({"step": 0, "cached_positions": b.cached_positions, "memory_mib": b.bytes / 2**20,
                       "params": b.params, "receptive_field": b.receptive_field[0]}, "budget")
        bar = None
        if self.progress and self.dist.main:
            from tqdm import tqdm

            bar = tqdm(total=tc.steps, initial=self.step, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
        segments = self.stream.forever(self.epoch, self.index)
        tokens_per_step = tc.batch_size * tc.tgt_len * self.dist.world
        interval_loss, interval_steps, interval_start = torch.zeros((), device=self.device), 0, time.time()
        last_row: dict = {}
        try:
            while self.step < end:
                segment = next(segments)
                if segment.index == 0:
                    self.mems = [None] * self.chunks  # a new epoch restarts the streams: old memory is not their past
                loss, norm = self._train_step(segment)
                # commit: everything needed to continue from here
                self.step += 1
                self.epoch, self.index = (segment.epoch, segment.index + 1)
                if self.index >= len(self.stream):
                    self.epoch, self.index = self.epoch + 1, 0
                self.committed_mems = self.mems
                self.rng = capture_rng(self.device)
                interval_loss += loss
                interval_steps += 1
                if bar is not None:
                    bar.update(1)
                if self.step % tc.log_every == 0 or self.step == end:
                    elapsed = time.time() - interval_start
                    mean_loss = self.dist.mean(float(interval_loss) / interval_steps, self.device)
                    last_row = {
                        "step": self.step,
                        "loss": mean_loss,
                        "bits": mean_loss / LN2,
                        "lr": lr_at(self.step - 1, tc),
                        "grad_norm": float(norm),
                        "tokens_per_s": tokens_per_step * interval_steps / max(elapsed, 1e-9),
                        "epoch": self.epoch,
                    }
                    self._log(last_row, "train")
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{last_row['tokens_per_s']:,.0f}")
                    interval_loss, interval_steps, interval_start = torch.zeros((), device=self.device), 0, time.time()
                names = []
                if tc.eval_every and self.step % tc.eval_every == 0 and self.step < tc.steps:
                    names += self._evaluate_and_track()
                if tc.save_every and self.step % tc.save_every == 0:
                    names.append("last")
                if names:
                    self._save(tuple(names))
        except KeyboardInterrupt:
            self._save(("last",))
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.step < tc.steps:  # stopped early on purpose: keep the place
            self._save(("last",))
            return {"step": self.step, "train": last_row}
        names = self._evaluate_and_track() + ["last"]
        self._save(tuple(names))
        final = self._final_evaluation()
        result = {"step": self.step, "metric": metric, "train": last_row, "valid_best_loss": self.best_valid, "final": final}
        if self.dist.main:
            atomic_write_json(self.run_dir / "result.json", result)
            self._hparams(final)
            self.writer.close()
        return result

    def _evaluate_and_track(self) -> list[str]:
        """Validate (rank 0), log, and say whether this is the best checkpoint so far."""
        names = []
        if self.dist.main:
            row = self.validate()
            self._log({"step": self.step, **{k: v for k, v in row.items() if k != "loss_by_position"}}, "valid")
            if row["loss"] < self.best_valid:
                self.best_valid = row["loss"]
                names.append("best")
        if self.dist.world > 1:
            flag = [names]
            dist.broadcast_object_list(flag, src=0, group=_control_group())
            names = flag[0]
        return names

    def _final_evaluation(self) -> dict | None:
        if not self.dist.main:
            return None
        e = self.run.eval
        out = evaluate(
            self.model, self.corpus, e.split, e.tgt_len or self.run.train.tgt_len, e.batch_size, e.max_segments,
            self.precision, self.progress, Plan.of_run(self.run),
        )
        atomic_write_json(self.run_dir / "eval.json", out)
        self._log({"step": self.step, **{k: v for k, v in out.items() if k != "loss_by_position"}}, e.split)
        return out

    def _hparams(self, final: dict) -> None:
        from txl.memory import describe

        plan = describe(self.run.model)
        hp = {
            "memory": plan["memory"], "range": plan["range"], "attn": plan["attn"],
            "layers": self.run.model.n_layer, "d_model": self.run.model.d_model, "tgt_len": self.run.train.tgt_len,
            "lr": self.run.train.lr, "steps": self.run.train.steps, "corpus": self.corpus.name,
        }
        b = budget(self.run.model, self.run.train.tgt_len)
        metrics = {"hparam/final_loss": final["loss"], "hparam/cached_positions": b.cached_positions}
        for key in ("bpb", "bpc", "ppl", "accuracy"):
            if key in final:
                metrics[f"hparam/final_{key}"] = final[key]
        self.writer.add_hparams(hp, metrics, run_name=".")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def prepare_resume(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The saved config of a run folder, with only the overrides that do not change what is trained."""
    from txl.config import apply_overrides, load_config

    path = run_dir / "config.json"
    if not path.exists():
        raise TxlError(f"nothing to resume in {run_dir}: it has no config.json")
    run = load_config(path)
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(f"--resume keeps the run's own settings; only {', '.join(RESUMABLE_KEYS)} may change, not {key}")
    return apply_overrides(run, overrides)


def load_trained(path: str | Path, device: str = "auto", which: str = "last") -> tuple[TransformerXL, RunConfig, Path]:
    """A trained model from a run folder or checkpoint folder, in eval mode."""
    folder = ckpt.find_checkpoint(path, which)
    if folder is None:
        raise TxlError(f"no checkpoint found at {path} (give a run folder or a checkpoint folder)")
    run = from_dict(RunConfig, ckpt.read_config(folder))
    model = TransformerXL(run.model)
    ckpt.load_weights(model, folder)
    model.to(pick_device(device))
    return model.eval(), run, folder
