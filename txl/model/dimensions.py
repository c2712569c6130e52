"""The registry of per-layer memory dimensions: each declared once, with what the rest of txl needs to know.

A dimension is one per-layer quantity a plan can set (memory length, attention range, attention variant, memory
dtype, sinks, compressed memory, or one registered later). Its `Dimension` names its plan kind (how the plan
language writes it), the layer field it lives in, its keyword (the flag's dest, the keyword `apply_plans` and a
`Variant` take), the flag as typed and its help, its column title, whether a result names it when every layer has
its default, whether an evaluation may change it, the grid flag a plan search lists its choices with, and the
weight layouts whose code can run a value other than its default. The command line's flags, an evaluation
variant's identity, report and budget columns, export refusal, the plan search's choices and the test fixtures
all read them from here.

A dimension registered outside the config (`register_dimension`) keeps its per-layer value in
`LayerConfig.extra[name]` (written to JSON only when set), so registering one changes no other config's hash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from txl.config import LayerConfig
from txl.plan.language import COMPRESS, MEMORY, RANGE, SINKS, Compression, PlanKind


def _parse_attn(text: str) -> str:
    from txl.attention import VARIANTS  # lazily: the command line reads this registry without torch

    name, plus, addon = text.partition("+")
    if name not in VARIANTS:
        raise ValueError(f"unknown attention variant {name!r} (known: {', '.join(VARIANTS)})")
    if plus and addon != "fastrpb":
        raise ValueError(f"unknown add-on {addon!r} after {name!r} (the one add-on is +fastrpb)")
    return text


def _check_dtype(name: str) -> str:
    from txl.model.quantize import check_dtype

    return check_dtype(name)


ATTENTION = PlanKind("attention", ("attn",), _parse_attn, str, "xl")
MEMORY_DTYPE = PlanKind("memory dtype", ("dtype",), _check_dtype, str, "fp32")  # see txl.model.quantize


@dataclass(frozen=True)
class Dimension:
    """One per-layer quantity a plan can set, and what the rest of txl needs to know of it."""

    kind: PlanKind
    flag: str  # the keyword apply_plans and a Variant take, and the command-line flag's dest
    title: str  # its column in reports and budgets; the word an evaluation plan's name uses for it
    help: str  # the command-line flag's help
    cli: str = ""  # the flag as typed (default: --FLAG with dashes)
    get: Callable[[LayerConfig], Any] | None = None  # None: LayerConfig.extra[name]
    set: Callable[[LayerConfig, Any], None] | None = None
    always: bool = False  # named by describe (and an evaluation's identity) even at its default: the first three
    at_eval: bool = True  # an evaluation-time plan may change it (an attention variant is built into the model)
    grid: str | None = None  # txl plan's flag listing the values a search may choose per layer
    grid_example: str = ""
    layouts: tuple[str, ...] = ()  # export layouts whose code runs a value other than the default
    budget_after: str = "cached"  # the budget table's column it follows
    field: str = ""  # the LayerConfig field an export refusal names (default: extra.NAME)
    word: str = ""  # how a searched plan's label names it (default: its flag): 'as int8'
    lossy: str = ""  # what layers at another value do, as an export refusal says it (default: 'set TITLE')
    # A memory family of its own (registered later): `positions(value)` is how many states a layer at `value` keeps
    # beside its recent memory (budgets count them at its memory dtype; every query sees them, just before the oldest
    # memory), and `keep(value, evicted, kept)` what it keeps after a segment, from the states its recent memory
    # evicted then (oldest first; None when none) and what it kept before (None at first): (B, N, D) or None.
    positions: Callable[[Any], int] | None = None
    keep: Callable[[Any, Any, Any], Any] | None = None

    @property
    def option(self) -> str:
        return self.cli or "--" + self.flag.replace("_", "-")


def _field(name: str) -> dict:
    return {"get": lambda layer: getattr(layer, name), "set": lambda layer, v: setattr(layer, name, v), "field": name}


def _set_attn(layer: LayerConfig, value: str) -> None:
    layer.attn, _, addon = value.partition("+")
    layer.fastrpb = addon == "fastrpb"


def get_compression(layer: LayerConfig) -> Compression:
    return Compression(layer.cmem_len, layer.cmem_rate, layer.cmem_fn) if layer.cmem_len else Compression()


def _set_compression(layer: LayerConfig, value: Compression) -> None:
    layer.cmem_len, layer.cmem_rate, layer.cmem_fn = value.length, value.rate, value.fn


DIMENSIONS: dict[str, Dimension] = {
    "memory": Dimension(MEMORY, "memory", "memory", "memory length per layer", **_field("mem_len"), always=True),
    "range": Dimension(
        RANGE,
        "attn_range",
        "range",
        "attention range per layer, e.g. 'range=128@first:12' (default unlimited)",
        cli="--range",
        **_field("attn_range"),
        always=True,
        budget_after="range",
        lossy="limit their attention range",
    ),
    "attn": Dimension(
        ATTENTION,
        "attn",
        "attn",
        "attention variant per layer, e.g. 'attn=las@first:6,xl' (default xl)",
        get=lambda layer: layer.label,
        set=_set_attn,
        always=True,
        at_eval=False,
        layouts=("original", "transformers"),
        field="attn",
    ),
    "dtype": Dimension(
        MEMORY_DTYPE,
        "memory_dtype",
        "stored as",
        "how each layer stores its memory: fp32 bf16 fp16 fp8 int8 int4, e.g. 'dtype=int8@first:4,fp32'",
        **_field("mem_dtype"),
        word="as",
        lossy="store their memory quantized",
        grid="dtypes",
        grid_example="fp32,int8,int4",
    ),
    "sinks": Dimension(
        SINKS,
        "sinks",
        "sinks",
        "attention sinks per layer: the stream's first N states kept for good, e.g. 'sinks=4@last:2,0' (default 0)",
        **_field("sinks"),
        lossy="keep attention sinks",
        grid="sinks-grid",
        grid_example="0,4",
        budget_after="range",
    ),
    "compress": Dimension(
        COMPRESS,
        "compress",
        "compressed",
        "compressed memory per layer, LENGTH/RATE:FN (FN mean, max or conv), e.g. 'compress=16/4:mean@last:2,0' "
        "(default 0: none)",
        get=get_compression,
        set=_set_compression,
        field="cmem_len",
        lossy="keep a compressed memory",
        grid="compress-grid",
        grid_example="0,8/4:mean",
        budget_after="memory",
    ),
}


def register_dimension(name: str, dim: Dimension) -> Dimension:
    """Add a memory dimension (a new family): its values live in LayerConfig.extra[name] unless it gives get and
    set. Every flag, identity, column, refusal and search choice then knows it. A name or flag twice is refused."""
    if name in DIMENSIONS or dim.flag in plan_flags():
        raise ValueError(f"memory dimension {name!r} (flag {dim.flag!r}) is registered already")
    taken = {d.option for d in DIMENSIONS.values()} | {d.grid for d in DIMENSIONS.values() if d.grid}
    if dim.option in taken or (dim.grid and dim.grid in taken) or dim.option in RESERVED_OPTIONS:
        raise ValueError(f"memory dimension {name!r}: its flag {dim.option} or grid {dim.grid} is taken")
    if (dim.get is None) != (dim.set is None):
        raise ValueError(f"memory dimension {name!r}: give both get and set, or neither (its values in extra)")
    if name.endswith("_scale") or "." in name:
        raise ValueError(f"memory dimension {name!r}: a name may not end in _scale or hold a dot (checkpoint keys)")
    if (dim.keep is None) != (dim.positions is None):
        raise ValueError(f"memory dimension {name!r}: a family gives both keep and positions")
    if dim.get is None:
        default = dim.kind.default
        dim = Dimension(
            **{**vars(dim), "get": lambda layer: layer.extra.get(name, default), "set": _extra_setter(name, default)}
        )
    DIMENSIONS[name] = dim
    return dim


# flags the commands that take plans have beside the plan dimensions' (a dimension may not take them)
RESERVED_OPTIONS = frozenset({"--memory", "--layers", "--d-model", "--set", "--same-length", "--clamp-len", "--split"})


def _extra_setter(name: str, default: Any) -> Callable[[LayerConfig, Any], None]:
    def put(layer: LayerConfig, value: Any) -> None:
        if value == default:
            layer.extra.pop(name, None)  # a layer at the default writes nothing: configs keep their hashes
        else:
            layer.extra[name] = value

    return put


def unregister_dimension(name: str) -> None:
    """Remove a dimension `register_dimension` added (tests register made-up ones)."""
    DIMENSIONS.pop(name)


def families() -> dict[str, Dimension]:
    """The registered dimensions that keep states of their own beside the recent memory (those with `keep`)."""
    return {name: dim for name, dim in DIMENSIONS.items() if dim.keep is not None}


def family_positions(layer: LayerConfig) -> int:
    """The states a layer keeps in registered families beside its recent memory, sinks and compressed slots."""
    return sum(dim.positions(dim.get(layer)) for dim in families().values())


def plan_flags() -> tuple[str, ...]:
    """The keywords MemoryPlan.parse, apply_plans and a Variant take, one per dimension."""
    return tuple(dim.flag for dim in DIMENSIONS.values())


def optional() -> dict[str, Dimension]:
    """The dimensions a result names only where a layer leaves the default (every one added after the first)."""
    return {name: dim for name, dim in DIMENSIONS.items() if not dim.always}


def at_eval() -> dict[str, Dimension]:
    """The dimensions an evaluation-time plan may change."""
    return {name: dim for name, dim in DIMENSIONS.items() if dim.at_eval}


def searched() -> dict[str, Dimension]:
    """The dimensions a plan search chooses per layer beside the memory length (those with a grid flag)."""
    return {name: dim for name, dim in DIMENSIONS.items() if dim.grid}


class _Live(Mapping):
    """A mapping read from the registry on every access, so a dimension registered later is in it."""

    def __init__(self, build: Callable[[], dict]):
        self._build = build

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self):
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())


def live(build: Callable[[], dict]) -> Mapping:
    """A module-level table derived from the registry (e.g. a search's choices), kept current."""
    return _Live(build)


def default_text(dim: Dimension) -> str:
    """How the plan language writes the dimension's default, as tables show it."""
    return dim.kind.format_value(dim.kind.default)
