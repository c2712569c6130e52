"""Benchmarks: attention variants as segments grow (attention) and whole training steps (train)."""

import importlib
import importlib.util


def __getattr__(name: str):
    """The names of the module `txl.bench` was before it became a package (`from txl.bench import X` still works),
    read from txl.bench.attention when first asked for, so importing a sibling module does not load it."""
    if name.startswith("__"):
        raise AttributeError(name)
    if importlib.util.find_spec(f"txl.bench.{name}") is not None:  # a module of the package: itself, not the old name
        return importlib.import_module(f"txl.bench.{name}")
    try:
        return getattr(importlib.import_module("txl.bench.attention"), name)
    except AttributeError:
        raise AttributeError(f"module 'txl.bench' has no attribute {name!r}") from None
