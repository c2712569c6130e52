"""The model's configuration: each layer's memory and attention (`LayerConfig`), the model (`ModelConfig`), and the
registry of the settings sections attention variants own (`variant_settings`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from txl.config.domains import AT_LEAST_0, AT_LEAST_1, DOMAINS, FRACTION, ConfigError, Domain, check_domains, positive


@dataclass
class LayerConfig:
    """One layer's memory and attention: what it caches, how far back it looks, how it scores keys."""

    mem_len: int = 512  # past hidden states cached (the original enwik8 base trains with 512)
    attn_range: int | None = None  # largest query-key distance allowed; None = unlimited
    attn: str = "xl"  # attention variant, a name in txl.attention.VARIANTS
    fastrpb: bool = False  # add FastRPB's W V term (Zubkov & Gavrilov) to this layer
    # how the cached states are stored (txl.model.quantize: fp32 bf16 fp16 fp8 int8 int4); written to JSON only when not
    # fp32, so configs and the config hashes of results from before it existed stay as they were
    mem_dtype: str = field(default="fp32", metadata={"omit_default": True})
    # attention sinks: the first states of the stream this layer keeps for good beside its memory (StreamingLLM;
    # txl.model.cache.take_sinks); written to JSON only when not 0, as mem_dtype
    sinks: int = field(default=0, metadata={"omit_default": True})
    # compressed memory (Rae et al. 2019; txl.model.cache.pool_groups): up to cmem_len slots, each pooling cmem_rate
    # states evicted from the memory by cmem_fn (mean, max, conv); 0 slots: none. Written to JSON only when not default
    cmem_len: int = field(default=0, metadata={"omit_default": True})
    cmem_rate: int = field(default=4, metadata={"omit_default": True})
    cmem_fn: str = field(default="mean", metadata={"omit_default": True})
    # the values of memory dimensions registered beyond these fields (txl.model.dimensions.register_dimension), by
    # dimension name, as JSON values; written to JSON only when a layer has one
    extra: dict[str, Any] = field(default_factory=dict, metadata={"omit_default": True})

    @property
    def label(self) -> str:
        """The variant as plans write it, e.g. 'xl+fastrpb'."""
        return self.attn + ("+fastrpb" if self.fastrpb else "")


# The settings sections an attention variant owns (model.las, model.t5, ...): each is a dataclass beside its variant
# in txl/attention/, registered here by `variant_settings` when txl.attention is imported, so the config knows them
# without knowing the variants. A ModelConfig holds one of each registered section (its defaults until set).
VARIANT_SETTINGS: dict[str, type] = {}
OMIT_AT_DEFAULT: set[str] = set()  # sections JSON leaves out while at their defaults (see variant_settings)
# how a section read as plain data is built once its variant has registered: txl.config.files.from_dict (set there,
# as files sits above this module)
read_section: Any = None


def variant_settings(name: str, domains: dict[str, Domain] | None = None, omit_default: bool = True) -> Any:
    """Class decorator: register a variant's settings dataclass as the model config section `name`, with the
    domains of its numeric fields (checked like every other section's). Its optional `validate(model)` checks
    the section against the model config it sits in. With `omit_default` (for every new section) the section is
    written to JSON only when set, so adding a variant leaves the configs, and the config hashes of results, of
    everything else as they were; the four sections that predate the registry are always written."""

    def register(cls: type) -> type:
        if VARIANT_SETTINGS.get(name, cls) is not cls:
            raise ValueError(f"model config section {name!r} is registered twice")
        if hasattr(ModelConfig, name) or name in {f.name for f in dataclasses.fields(ModelConfig)}:
            raise ValueError(f"model config section {name!r} would hide the model attribute of that name")
        VARIANT_SETTINGS[name] = cls
        DOMAINS[cls] = dict(domains or {})
        if omit_default:
            OMIT_AT_DEFAULT.add(name)
        return cls

    return register


@dataclass
class ModelConfig:
    """The Transformer-XL language model. Defaults are the original enwik8 base configuration."""

    vocab_size: int = 256
    n_layer: int = 12
    d_model: int = 512
    n_head: int = 8
    d_head: int = 64
    d_inner: int = 2048
    d_embed: int | None = None  # embedding width before projection; None = d_model
    dropout: float = 0.1
    dropatt: float = 0.0
    pre_lnorm: bool = False
    same_length: bool = False  # every query sees the same number of past keys, by same_length_rule
    # tf: distances 0..mem_len (the original TensorFlow code; txl's default for models trained here);
    # pt: 0..mem_len-1 (the original PyTorch code and transformers' port; set by txl import)
    same_length_rule: Literal["tf", "pt"] = "tf"
    clamp_len: int | None = None  # relative distances above this use this distance's embedding
    tie_weight: bool = True
    cutoffs: list[int] = field(default_factory=list)  # adaptive softmax/input cluster boundaries
    div_val: int = 1
    tie_projs: list[bool] | None = None  # per cluster; None = all but the head cluster
    untie_r: bool = False  # per-layer content/position biases u, v instead of shared ones
    init_std: float = 0.02
    proj_init_std: float = 0.01
    attn_impl: Literal["auto", "plain", "sdpa", "flex", "fused"] = (
        "auto"  # auto: sdpa on a GPU, plain on a CPU; fused: txl.attention.fused
    )
    layers: list[LayerConfig] = field(default_factory=list)
    # the variants' settings sections by name (VARIANT_SETTINGS), read as attributes (cfg.las.kernel); in JSON
    # each is a key of the model object ("las": {...}), as the fields above are
    settings: dict[str, Any] = field(default_factory=dict, metadata={"flatten": True})

    def __post_init__(self) -> None:
        if not self.layers and self.n_layer > 0:
            self.layers = [LayerConfig() for _ in range(self.n_layer)]
        self.complete()

    def complete(self) -> ModelConfig:
        """One of each registered section, in the registry's order (their order in JSON), those read as plain data
        before their variant registered built now; a section of a name no variant registers is kept as it is, for
        validate to refuse. The dict is this config's own (a dataclasses.replace copy shares no sections dict)."""
        settings = {}
        for name, cls in VARIANT_SETTINGS.items():
            value = self.settings.get(name, None)
            if value is None:
                value = cls()
            elif isinstance(value, dict) and read_section is not None:
                value = read_section(cls, value, f"model.{name}")
            settings[name] = value
        self.settings = {**settings, **{k: v for k, v in self.settings.items() if k not in settings}}
        return self

    def __getattr__(self, name: str) -> Any:
        """A registered variant's settings section (created at its defaults if this config predates it)."""
        if name.startswith("__") or name == "settings" or name not in VARIANT_SETTINGS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        section = self.settings.get(name)
        if section is None or isinstance(section, dict):  # not yet built: complete once, not at every read
            section = self.complete().settings[name]
        return section

    @property
    def same_length_mode(self) -> bool | str:
        """False when same_length is off, else the rule in force ("tf" or "pt"), as txl.plan.reach.max_distance reads
        it."""
        return self.same_length and self.same_length_rule

    @property
    def embed_dim(self) -> int:
        """Width of the embedding tables' first cluster."""
        return self.d_model if self.d_embed is None else self.d_embed

    @property
    def mem_lens(self) -> list[int]:
        return [layer.mem_len for layer in self.layers]

    @property
    def attn_ranges(self) -> list[int | None]:
        return [layer.attn_range for layer in self.layers]

    def resolved_tie_projs(self) -> list[bool]:
        """Which output projections share the input embedding's projection, one flag per cluster."""
        if self.tie_projs is not None:
            return list(self.tie_projs)
        return [False] + [True] * len(self.cutoffs)

    def _check_adaptive(self) -> None:
        """The adaptive input and softmax: cutoffs, div_val and tied projections that make sense together."""
        bounds = [0, *self.cutoffs, self.vocab_size]
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise ConfigError(
                f"model.cutoffs must increase strictly and stay below model.vocab_size ({self.vocab_size}), "
                f"got {self.cutoffs}"
            )
        for i in range(len(self.cutoffs) + 1):
            if self.embed_dim // self.div_val**i < 1:
                raise ConfigError(
                    f"model.div_val={self.div_val} leaves cluster {i} with no embedding width "
                    f"(d_embed {self.embed_dim} // {self.div_val}**{i}); use a smaller div_val or fewer cutoffs"
                )
        if self.tie_projs is not None and len(self.tie_projs) != len(self.cutoffs) + 1:
            raise ConfigError(
                f"model.tie_projs needs one flag per cluster ({len(self.cutoffs) + 1}), got {len(self.tie_projs)}"
            )

    def validate(self) -> ModelConfig:
        """Check values and combinations of fields; raise ConfigError naming the field.

        The checks that need the plan language or the attention variants (an unknown
        variant, a variant that cannot run its layer's plan) are txl.model.plans.check_model's.
        """
        positive(self, "model", ["vocab_size", "n_layer", "d_model", "n_head", "d_head", "d_inner", "div_val"])
        if self.d_embed is not None and self.d_embed < 1:
            raise ConfigError(f"model.d_embed must be >= 1 or none, got {self.d_embed}")
        if self.d_model % 2:
            raise ConfigError(f"model.d_model must be even (sinusoidal position embeddings), got {self.d_model}")
        for name in ("dropout", "dropatt"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {value}")
        if self.clamp_len is not None and self.clamp_len < 0:
            raise ConfigError(f"model.clamp_len must be >= 0 or none, got {self.clamp_len}")
        if len(self.layers) != self.n_layer:
            raise ConfigError(
                f"model.layers has {len(self.layers)} entries but model.n_layer is {self.n_layer}: "
                f"give a memory plan for {self.n_layer} layers (--memory) or set model.n_layer={len(self.layers)}"
            )
        self._check_adaptive()
        for name, section in self.complete().settings.items():
            if not VARIANT_SETTINGS:
                break  # read where no variant registered (txl.config alone): txl.model.plans.check_model judges them
            if not isinstance(section, VARIANT_SETTINGS.get(name, ())):
                raise ConfigError(
                    f"unknown config key 'model.{name}': no attention variant registers a section of that name"
                    f" (known: {', '.join(VARIANT_SETTINGS)})"
                )
            if hasattr(section, "validate"):
                section.validate(self)

        for i, layer in enumerate(self.layers):
            where = f"model.layers.{i}"
            if layer.mem_len < 0:
                raise ConfigError(f"{where}.mem_len must be >= 0, got {layer.mem_len}")
            if layer.attn_range is not None and layer.attn_range < 0:
                raise ConfigError(f"{where}.attn_range must be >= 0 or none, got {layer.attn_range}")
            if layer.sinks < 0:
                raise ConfigError(f"{where}.sinks must be >= 0, got {layer.sinks}")
            if layer.cmem_len < 0 or layer.cmem_rate < 1:
                raise ConfigError(
                    f"{where}: cmem_len must be >= 0 and cmem_rate >= 1, got {layer.cmem_len}, {layer.cmem_rate}"
                )
            if layer.cmem_fn not in ("mean", "max", "conv"):
                raise ConfigError(f"{where}.cmem_fn must be mean, max or conv, got {layer.cmem_fn!r}")
        check_domains(DOMAINS, self, "model")
        return self


DOMAINS.update(
    {
        LayerConfig: {"mem_len": AT_LEAST_0, "attn_range": AT_LEAST_0},
        ModelConfig: {
            "vocab_size": AT_LEAST_1,
            "n_layer": AT_LEAST_1,
            "d_model": Domain(2),
            "n_head": AT_LEAST_1,
            "d_head": AT_LEAST_1,
            "d_inner": AT_LEAST_1,
            "d_embed": AT_LEAST_1,
            "dropout": FRACTION,
            "dropatt": FRACTION,
            "clamp_len": AT_LEAST_0,
            "div_val": AT_LEAST_1,
            "init_std": AT_LEAST_0,
            "proj_init_std": AT_LEAST_0,
        },
    }
)
