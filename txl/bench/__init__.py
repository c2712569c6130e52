"""Benchmarks: attention variants as segments grow (attention) and whole training steps (train)."""

from txl import old_names

__getattr__ = old_names("txl.bench", "attention")
