"""txl: Transformer-XL language models with per-layer memory plans."""

__version__ = "0.1.0"

import importlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402

# Where the modules of txl 0.1's flat layout live now. A job pickled on a cluster queue before the move (its class
# was txl.cluster.SweepJob) and a script importing txl.results still find them: the old name is the new module.
MOVED = {
    **{m: f"core.{m}" for m in ("errors", "io", "table", "locks", "signals", "log", "stats", "scales")},
    **{m: f"core.{m}" for m in ("devices", "distributed")},
    "memory": "plan.language",
    "reach": "plan.reach",
    **{m: f"model.{m}" for m in ("plans", "quantize", "adaptive", "budget")},
    **{m: f"evaluation.{m}" for m in ("evaluate", "protocols", "generate", "analysis", "context_ablation")},
    **{m: f"train.{m}" for m in ("optim", "runs", "run_evals", "checkpoint", "presets")},
    "train_log": "train.log",
    "interop_checks": "interop.checks",
    "interop_layouts": "interop.layouts",
    "bench_train": "bench.train",
    **{m: f"study.{m}" for m in ("results", "sweep", "cluster", "launch", "groups", "pairs", "compare", "report")},
    "experiments": "study.registry",
    "report_figures": "study.figures",
    "plan_search": "search.search",
    "plan_choices": "search.choices",
    "plan_references": "search.references",
    "plan_results": "search.results",
}


def old_names(package: str, module: str):
    """A package's `__getattr__` for the names of the module it was before it became a package (`from txl.model
    import TransformerXL` still works): a module of the package is itself, any other name is read from `module`
    when first asked for, so importing a sibling module does not load it."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports txl.OLD as the module it moved to (MOVED): one module object under both names, which keeps its own
    name and spec (so reloading it reloads the real module)."""

    def __init__(self):
        self.own: dict = {}  # a moved module's own spec, loader and package while its old name is imported

    def find_spec(self, fullname, path, target=None):
        old = fullname.removeprefix("txl.")
        if fullname.startswith("txl.") and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module("txl." + MOVED[spec.name.removeprefix("txl.")])
        self.own[spec.name] = (module.__spec__, module.__loader__, module.__package__)  # written over next
        return module

    def exec_module(self, module):
        # the module it moved to has run already; the import machinery wrote the old name's spec onto it: undo that
        module.__spec__, module.__loader__, module.__package__ = self.own.pop(module.__spec__.name)


if not any(isinstance(f, _Moved) for f in sys.meta_path):
    sys.meta_path.insert(0, _Moved())  # first: a leftover txl/OLD.py of an older checkout is never a second copy

from txl.core.errors import TxlError  # noqa: E402

__all__ = ["MOVED", "TxlError", "__version__"]
