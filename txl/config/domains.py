"""Field domains: the values each numeric config field may take, checked for every section alike."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from txl.core.errors import TxlError


class ConfigError(TxlError):
    """An invalid configuration value or combination; the message names the field."""


@dataclass(frozen=True)
class Domain:
    """The values a numeric field may take: an interval, closed unless said otherwise; None passes where allowed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


AT_LEAST_0, AT_LEAST_1, POSITIVE, FRACTION = Domain(0), Domain(1), Domain(0, lo_open=True), Domain(0, 1, hi_open=True)
# a size no machine can hold; larger values are refused here rather than by the allocator
HUGE = 2**40

# each config section's numeric fields and their domains, filled in by the modules that define the sections
# (txl.config.model, txl.config.sections) and by `variant_settings` for each variant's section
DOMAINS: dict[type, dict[str, Domain]] = {}


def check_domains(table: dict[type, dict[str, Domain]], obj: Any, prefix: str) -> None:
    """Every number in `obj` (nested sections and lists included) finite and within its field's domain in `table`."""
    domains = table.get(type(obj), {})
    for f in dataclasses.fields(obj):
        value, where = getattr(obj, f.name), f"{prefix}.{f.name}"
        if f.metadata.get("flatten"):  # sections by name that JSON writes as keys of `obj` (model.las, ...)
            for name, section in value.items():
                if dataclasses.is_dataclass(section):
                    check_domains(table, section, f"{prefix}.{name}")
            continue
        items = value if isinstance(value, list) else [value]
        for i, v in enumerate(items):
            at = f"{where}.{i}" if isinstance(value, list) else where
            if dataclasses.is_dataclass(v):
                check_domains(table, v, at)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise ConfigError(f"{at} must be a finite number, got {v}")
            if abs(v) > HUGE:
                raise ConfigError(f"{at} = {v} is beyond any machine (at most {HUGE:,}); use a realistic value")
            domain = domains.get(f.name)
            if domain is not None and v not in domain:
                optional = " or none" if f.default is None else ""
                raise ConfigError(f"{at} must be {domain}{optional}, got {v}")


def positive(obj: Any, prefix: str, names: list[str]) -> None:
    """Each named field of `obj` >= 1, else a ConfigError naming `prefix.field`."""
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(f"{prefix}.{name} must be >= 1, got {value}")
