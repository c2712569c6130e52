"""The model and what is computed from its config alone: the plan object and its checks (plans), the memory
cache (cache) and its storage dtypes (quantize), the adaptive softmax, the Transformer-XL itself (transformer)
and budgets (budget)."""

from txl import old_names

__getattr__ = old_names("txl.model", "transformer")
