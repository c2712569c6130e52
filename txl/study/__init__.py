"""Experiments and their results: the registry, sweeps run here or as jobs (sweep, cluster, launch), the
results table, seeds as groups, pairs, reports and their figures, runs side by side (compare)."""
