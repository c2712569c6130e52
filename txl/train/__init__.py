"""Training: the loop (loop), what it prints and logs (log), optimizer and schedule (optim), run folders (runs,
run_evals), the checkpoint format (checkpoint) and named configurations (presets)."""

from txl import old_names

__getattr__ = old_names("txl.train", "loop")
