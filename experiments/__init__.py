"""Experiment definitions, one module per paper or theme; see txl/experiments.py for the registry."""
