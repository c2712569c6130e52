"""For tests/slow/test_slurm.py only: holds a sweep's training job mid-training, by construction rather than by timing.

Python imports this module at start-up when its folder is on PYTHONPATH, which the test sets (with TXL_TEST_HOLD)
for the jobs it submits; Slurm passes the environment on. While the file TXL_TEST_HOLD names exists, a training
job waits after each checkpoint it saves before its last step, and writes the step it waits at to that path with
'.held' added, so the test requeues or cancels a job that is known to be mid-training. Removing the file lets it
go on. Without TXL_TEST_HOLD this does nothing.
"""

import importlib.abc
import importlib.util
import os
import sys
import time

HOLD = os.environ.get("TXL_TEST_HOLD")


def _hold_after_saves(trainer_cls) -> None:
    save = trainer_cls._save

    def held(self, names):
        save(self, names)
        if os.path.exists(HOLD) and self.step < self.run.train.steps:
            with open(f"{HOLD}.held.tmp", "w") as f:
                f.write(str(self.step))
            os.replace(f"{HOLD}.held.tmp", f"{HOLD}.held")
            while os.path.exists(HOLD):  # a signal's handler still runs here: a requeue or a cancel ends the wait
                time.sleep(0.1)

    trainer_cls._save = held


class _PatchTrainer(importlib.abc.MetaPathFinder):
    """Finds txl.train.loop as usual, and patches its Trainer once the module has run."""

    def find_spec(self, name, path, target=None):
        if name != "txl.train.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _hold_after_saves(module.Trainer)

        spec.loader.exec_module = exec_module
        return spec


if HOLD:
    sys.meta_path.insert(0, _PatchTrainer())
