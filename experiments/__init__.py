"""Experiment definitions, one module per paper or theme; importing this package registers them all.

A new definition is a module here with functions decorated by txl.study.registry.experiment,
added to the imports below (tests/study/test_experiments.py then builds and trains it at scale tiny).
"""

from experiments import (  # noqa: F401
    analysis,
    fastrpb,
    frontier,
    las,
    quantized,
    quickstart,
    rae2019,
    rae2020,
    sparse_memory,
    streaming,
)
