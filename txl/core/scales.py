"""The scales an experiment is defined at, from the tests' to the published size (no heavy imports: the
command line's choices read it)."""

from __future__ import annotations

# tiny: tests, seconds; small: a CPU, minutes a run; medium: a CPU, where training with long memory pays
# beyond the seed noise; paper: the published size, a GPU
SCALES = ("tiny", "small", "medium", "paper")
