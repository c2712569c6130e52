"""The model and what is computed from its config alone: the plan object and its checks (plans), the memory
cache (cache) and its storage dtypes (quantize), the adaptive softmax, the Transformer-XL itself (transformer)
and budgets (budget)."""

import importlib
import importlib.util


def __getattr__(name: str):
    """The names of the module `txl.model` was before it became a package (`from txl.model import X` still works),
    read from txl.model.transformer when first asked for, so importing a sibling module does not load it."""
    if name.startswith("__"):
        raise AttributeError(name)
    if importlib.util.find_spec(f"txl.model.{name}") is not None:  # a module of the package: itself, not the old name
        return importlib.import_module(f"txl.model.{name}")
    try:
        return getattr(importlib.import_module("txl.model.transformer"), name)
    except AttributeError:
        raise AttributeError(f"module 'txl.model' has no attribute {name!r}") from None
