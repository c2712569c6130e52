"""The configuration dataclasses of data, training, evaluation and the whole run, and their field-level checks (the
model's section: txl.config.model)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from txl.config.domains import (
    AT_LEAST_0,
    AT_LEAST_1,
    DOMAINS,
    FRACTION,
    POSITIVE,
    ConfigError,
    Domain,
    check_domains,
    positive,
)
from txl.config.model import ModelConfig

# --------------------------------------------------------------------------- data


@dataclass
class SyntheticConfig:
    """Long-range tasks with a known dependency distance (Wang & E): copy, pointer, decay."""

    lags: list[int] = field(default_factory=lambda: [64])  # distance from each answer back to what it depends on
    symbols: int = 16  # data alphabet; chance accuracy is 1/symbols (1/2 for decay)
    query_every: int = 8  # mean spacing between queries
    train_tokens: int = 262_144
    eval_tokens: int = 32_768
    decay: Literal["exp", "power"] = "exp"  # kernel of the decay task
    decay_scale: float = 16.0  # exp: time constant; power: exponent
    seed: int = 0


@dataclass
class DataConfig:
    """Which text becomes segments, and how it is tokenized."""

    corpus: str = "pystdlib"  # a name from `txl data list`, or a path to a file or folder
    tokenizer: str = "auto"  # auto (the corpus default), bytes, chars, words, sentencepiece, or a .model path
    vocab_size: int | None = None  # sentencepiece size, or the most frequent words to keep
    min_freq: int = 1  # words seen fewer times in training become <unk>
    sp_model_type: Literal["unigram", "bpe"] = "unigram"
    split: Literal["auto", "contiguous", "files"] = "auto"  # how a local corpus is split (see data/README.md)
    root: str | None = None  # cache folder; default $TXL_DATA, else ./data/cache
    max_tokens: int | None = None  # use only the first N training tokens (validation and test: N // 10)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self) -> DataConfig:
        if self.vocab_size is not None and self.vocab_size < 2:
            raise ConfigError(f"data.vocab_size must be >= 2 or none, got {self.vocab_size}")
        if self.max_tokens is not None and self.max_tokens < 10:
            raise ConfigError(f"data.max_tokens must be >= 10 or none, got {self.max_tokens}")
        if self.min_freq < 1:
            raise ConfigError(f"data.min_freq must be >= 1, got {self.min_freq}")
        syn = self.synthetic
        if not syn.lags or min(syn.lags) < 2:
            raise ConfigError(f"data.synthetic.lags must be one or more distances >= 2, got {syn.lags}")
        if not 2 <= syn.symbols <= 250:
            raise ConfigError(f"data.synthetic.symbols must be in 2..250, got {syn.symbols}")
        positive(syn, "data.synthetic", ["query_every", "train_tokens", "eval_tokens"])
        check_domains(DOMAINS, self, "data")
        return self


# --------------------------------------------------------------------------- training and evaluation


@dataclass
class TrainConfig:
    """The optimisation: schedule, precision, checkpoints, logging. Defaults follow the enwik8 base run."""

    steps: int = 400_000
    batch_size: int = 22  # sequences per process
    tgt_len: int = 512  # segment length
    grad_accum: int = 1  # split each batch into this many chunks, each with its own memory (lower peak memory)
    optimizer: Literal["adam", "adamw", "lamb"] = "adam"
    lr: float = 2.5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup: int = 0  # linear warm-up steps
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr: float = 0.0  # where cosine and linear decay end
    # txl: warm-up reaches lr at its last step, then the decay runs over the remaining steps;
    # original: as Dai et al.'s code (step 1 at the full rate, the decay counted from step 0)
    schedule_rule: Literal["txl", "original"] = "txl"
    clip: float = 0.25  # gradient-norm clipping; 0 turns it off
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    tf32: bool = True
    compile: bool = False  # torch.compile the model
    seed: int = 1111
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    shuffle_streams: bool = False  # start the streams at a new offset each epoch
    loss_on: Literal["auto", "all", "mask"] = "auto"  # mask: only scored targets (auto: mask for synthetic tasks)
    # a checkpoint folder whose weights a fresh run starts from, with a fresh optimizer (txl train --init-from);
    # written to JSON only when set, so the config hashes of other runs stay as they were
    init_from: str | None = field(default=None, metadata={"omit_default": True})
    # the weight of the attention-reconstruction loss that trains learned (conv) memory compression (Rae et al. 2019)
    recon_weight: float = field(default=1.0, metadata={"omit_default": True})
    # with attention sinks: every this many steps training takes them anew from a segment's first states, so the
    # sinks a model learns to use are what its current weights produce (0: once per stream, at an epoch's start)
    sink_refresh: int = field(default=0, metadata={"omit_default": True})
    log_every: int = 50
    eval_every: int = 2000  # 0: evaluate only at the end
    eval_segments: int | None = 200  # validation segments per evaluation; none = the whole split
    save_every: int = 2000  # 0: save only at the end

    def validate(self) -> TrainConfig:
        positive(self, "train", ["batch_size", "tgt_len", "grad_accum", "log_every"])
        if self.steps < (0 if self.init_from else 1):  # 0 steps: a run that scores the weights it starts from
            raise ConfigError(f"train.steps must be >= 1 (0 only with train.init_from), got {self.steps}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train.batch_size ({self.batch_size}) must be a multiple of train.grad_accum ({self.grad_accum})"
            )
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(
                f"train.lr must be > 0 and train.min_lr in [0, lr], got lr={self.lr}, min_lr={self.min_lr}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two values in [0, 1), got {self.betas}")
        for name in ("warmup", "eval_every", "save_every", "weight_decay", "clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_segments is not None and self.eval_segments < 1:
            raise ConfigError(f"train.eval_segments must be >= 1 or none, got {self.eval_segments}")
        if not DEVICE.fullmatch(self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_domains(DOMAINS, self, "train")
        return self


@dataclass
class EvalConfig:
    """How a trained model is evaluated; the original evaluates with a longer memory than it trains with."""

    split: Literal["valid", "test"] = "valid"  # choose on valid; report test once (txl eval --split test)
    tgt_len: int | None = None  # segment length; none = train.tgt_len
    batch_size: int = 10
    memory: str | None = None  # memory plan; none = the training plan
    attn_range: str | None = None  # range plan; none = the training plan
    clamp_len: int | None = None  # none = the model's
    same_length: bool | None = None  # none = the model's
    max_segments: int | None = None  # none = the whole split

    def validate(self) -> EvalConfig:
        positive(self, "eval", ["batch_size"])
        if self.tgt_len is not None and self.tgt_len < 1:
            raise ConfigError(f"eval.tgt_len must be >= 1 or none, got {self.tgt_len}")
        if self.max_segments is not None and self.max_segments < 1:
            raise ConfigError(f"eval.max_segments must be >= 1 or none, got {self.max_segments}")
        check_domains(DOMAINS, self, "eval")
        return self


DOMAINS.update(
    {
        SyntheticConfig: {
            "lags": Domain(2),
            "symbols": Domain(2, 250),
            "query_every": AT_LEAST_1,
            "train_tokens": AT_LEAST_1,
            "eval_tokens": AT_LEAST_1,
            "decay_scale": POSITIVE,
            "seed": AT_LEAST_0,
        },
        DataConfig: {"vocab_size": Domain(2), "min_freq": AT_LEAST_1, "max_tokens": Domain(10)},
        TrainConfig: {
            "steps": AT_LEAST_0,
            "batch_size": AT_LEAST_1,
            "tgt_len": AT_LEAST_1,
            "grad_accum": AT_LEAST_1,
            "lr": POSITIVE,
            "betas": FRACTION,
            "weight_decay": AT_LEAST_0,
            "recon_weight": AT_LEAST_0,
            "sink_refresh": AT_LEAST_0,
            "warmup": AT_LEAST_0,
            "min_lr": AT_LEAST_0,
            "clip": AT_LEAST_0,
            "seed": AT_LEAST_0,
            "log_every": AT_LEAST_1,
            "eval_every": AT_LEAST_0,
            "eval_segments": AT_LEAST_1,
            "save_every": AT_LEAST_0,
        },
        EvalConfig: {
            "tgt_len": AT_LEAST_1,
            "batch_size": AT_LEAST_1,
            "clamp_len": AT_LEAST_0,
            "max_segments": AT_LEAST_1,
        },
    }
)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


# --------------------------------------------------------------------------- run


@dataclass
class RunConfig:
    """Everything one run needs: the model, its data, how it trains, and how it is evaluated at the end."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> RunConfig:
        """Each section's field checks; txl.model.plans.check_run adds the plan and variant checks."""
        self.model.validate()
        self.data.validate()
        self.train.validate()
        self.eval.validate()
        return self
