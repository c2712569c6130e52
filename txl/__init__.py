"""txl: Transformer-XL language models with per-layer memory plans."""

__version__ = "0.1.0"

from txl.errors import TxlError  # noqa: E402

__all__ = ["TxlError", "__version__"]
