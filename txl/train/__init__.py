"""Training: the loop (loop), what it prints and logs (log), optimizer and schedule (optim), run folders (runs,
run_evals), the checkpoint format (checkpoint) and named configurations (presets)."""

import importlib
import importlib.util


def __getattr__(name: str):
    """The names of the module `txl.train` was before it became a package (`from txl.train import X` still works),
    read from txl.train.loop when first asked for, so importing a sibling module does not load it."""
    if name.startswith("__"):
        raise AttributeError(name)
    if importlib.util.find_spec(f"txl.train.{name}") is not None:  # a module of the package: itself, not the old name
        return importlib.import_module(f"txl.train.{name}")
    try:
        return getattr(importlib.import_module("txl.train.loop"), name)
    except AttributeError:
        raise AttributeError(f"module 'txl.train' has no attribute {name!r}") from None
