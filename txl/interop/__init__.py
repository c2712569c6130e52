"""Weights in other layouts: the layouts and their tensor names (layouts), what each can hold (checks), and
import and export (convert)."""

from txl import old_names

__getattr__ = old_names("txl.interop", "convert")
