"""Weights in other layouts: the layouts and their tensor names (layouts), what each can hold (checks), and
import and export (convert)."""

import importlib
import importlib.util


def __getattr__(name: str):
    """The names of the module `txl.interop` was before it became a package (`from txl.interop import X` still works),
    read from txl.interop.convert when first asked for, so importing a sibling module does not load it."""
    if name.startswith("__"):
        raise AttributeError(name)
    if importlib.util.find_spec(f"txl.interop.{name}") is not None:  # a module of the package: itself, not the old name
        return importlib.import_module(f"txl.interop.{name}")
    try:
        return getattr(importlib.import_module("txl.interop.convert"), name)
    except AttributeError:
        raise AttributeError(f"module 'txl.interop' has no attribute {name!r}") from None
