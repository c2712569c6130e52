"""The optimizer, its learning-rate schedule, and one training step.

One step takes the next segment of every stream. With grad_accum k the batch is
split into k groups of streams, each with its own memory, processed one after the
other (the original's batch_chunk): the gradient is the same, the peak memory lower.
"""

from __future__ import annotations

import contextlib
import math

import torch

from txl.config import TrainConfig
from txl.core.errors import TxlError
from txl.evaluation.evaluate import autocast


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then the schedule down to min_lr."""
    if cfg.schedule_rule == "original":
        return _original_lr(step, cfg)
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "linear":
        return cfg.lr + (cfg.min_lr - cfg.lr) * progress
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _original_lr(step: int, cfg: TrainConfig) -> float:
    """The original code's rate: it updates the rate after each step, so step 0 runs at the full rate,
    step s at s/warmup of it during warm-up, and the decay is counted from step 0 over all steps."""
    if step == 0 or cfg.schedule == "constant" and step >= cfg.warmup:
        return cfg.lr
    if step < cfg.warmup:
        return cfg.lr * step / cfg.warmup
    progress = min(1.0, step / max(1, cfg.steps))
    if cfg.schedule == "linear":
        return cfg.lr + (cfg.min_lr - cfg.lr) * progress
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def fused_update(params: list) -> bool:
    """Adam's update as one fused kernel where every parameter is a floating-point CUDA tensor (one launch instead
    of a few per parameter group); elsewhere torch's default, which CPU parity with the original code relies on."""
    return bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    betas = tuple(cfg.betas)
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        extra = {"fused": True} if fused_update(params) else {}
        return cls(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, **extra)
    try:
        from timm.optim import Lamb  # an optional dependency
    except ImportError:
        raise TxlError(
            "train.optimizer=lamb needs timm, which maintains a LAMB optimizer (pip install timm); or use adam/adamw"
        ) from None
    return Lamb(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


class TrainStep:
    """Forward and backward over each gradient-accumulation chunk, then clip, schedule and update.

    `model` owns the parameters; `net` is what runs them (the model itself, compiled, or
    wrapped in DistributedDataParallel).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        net: torch.nn.Module,
        cfg: TrainConfig,
        device: torch.device,
        precision: str,
        world: int = 1,
        loss_on_mask: bool = False,
    ):
        self.model, self.net, self.cfg = model, net, cfg
        self.device, self.precision, self.world, self.loss_on_mask = device, precision, world, loss_on_mask
        self.chunks = cfg.grad_accum
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.updating = False  # from the parameter update until the trainer has committed the step (it clears it)

    def __call__(self, segment, mems: list, step: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Optimizer step number `step` (0-based) on one batch of segments.

        Returns the loss and gradient norm, still on the device (reading them would wait
        for it), and each chunk's new memory.
        """
        rows = segment.inputs.size(0) // self.chunks
        weights = segment.mask.float() if (self.loss_on_mask and segment.mask is not None) else None
        total = weights.sum().clamp(min=1.0) if weights is not None else segment.targets.numel()
        new_mems = []
        loss_value = torch.zeros((), device=self.device)
        for c in range(self.chunks):
            part = slice(c * rows, (c + 1) * rows)
            last = c == self.chunks - 1
            sync_scope = self.net.no_sync() if (self.world > 1 and not last) else contextlib.nullcontext()
            with sync_scope:
                with autocast(self.device, self.precision):
                    nll, chunk_mems = self.net(segment.inputs[part], mems[c], segment.targets[part])
                w = weights[part] if weights is not None else None
                loss = ((nll * w) if w is not None else nll).sum() / total
                recon = self.model.recon_loss  # learned memory compression's own loss (it reaches f_c alone)
                extra = 0.0 if recon is None else self.cfg.recon_weight * recon / self.chunks
                self.scaler.scale(loss + extra).backward()
            loss_value += loss.detach().float()
            new_mems.append(chunk_mems)
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.clip if self.cfg.clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.cfg)
        self.updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm, new_mems

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        # a saved group carries the saving machine's `fused` flag, which loading would restore: keep this one's
        # (a GPU checkpoint resumed on a CPU must not switch to CPU fused Adam, nor a CPU one stay unfused on a GPU)
        opt_state = dict(state["optimizer"])
        opt_state["param_groups"] = [
            dict(g, fused=self.optimizer.defaults.get("fused")) for g in opt_state["param_groups"]
        ]
        self.optimizer.load_state_dict(opt_state)
        self.scaler.load_state_dict(state["scaler"])
