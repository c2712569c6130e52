"""Synthetic tasks with known lags (after Wang & E, NeurIPS 2024): a check of the memory plumbing against ground truth.

A plan whose receptive field is shorter than lag - 1 cannot see the token an answer
depends on and must stay at chance; a plan that reaches it can learn the task.
same_length makes the receptive field exactly the sum of the layers' memories.
"""

from __future__ import annotations

from txl.config import DataConfig, EvalConfig, ModelConfig, RunConfig, SyntheticConfig, TrainConfig
from txl.model.plans import apply_plans
from txl.study.registry import Experiment, Variant, experiment


def copy_base(scale: str) -> RunConfig:
    tiny = scale == "tiny"
    model = apply_plans(
        ModelConfig(
            vocab_size=17,
            n_layer=2,
            d_model=32 if tiny else 64,
            n_head=2 if tiny else 4,
            d_head=16,
            d_inner=64 if tiny else 128,
            dropout=0.0,
            same_length=True,
        ),
        memory="0",
    )
    syn = SyntheticConfig(
        lags=[12], symbols=8, query_every=4, train_tokens=60_000 if tiny else 200_000, eval_tokens=8_000
    )
    steps = {"tiny": 250, "small": 600, "medium": 1200, "paper": 3000}[scale]
    return RunConfig(
        model=model,
        data=DataConfig(corpus="copy", synthetic=syn),
        train=TrainConfig(
            steps=steps,
            batch_size=16,
            tgt_len=16,
            lr=3e-3,
            warmup=20,
            clip=1.0,
            eval_every=0,
            save_every=0,
            log_every=50,
            schedule="constant",
        ),
        eval=EvalConfig(split="valid", tgt_len=16, batch_size=16, max_segments=30),
    )


@experiment(
    "sparse-memory/lags",
    "copy tasks at fixed lags against plans whose receptive field falls short of or reaches the lag",
)
def lags(scale: str) -> Experiment:
    base = copy_base(scale)
    lag_list = {"tiny": [12], "small": [12, 40], "medium": [12, 40, 100], "paper": [12, 40, 200]}[scale]
    variants = []
    for lag in lag_list:
        for mem in sorted({lag // 2, lag - 2, lag, 2 * lag}):
            # layer 0 sees only itself; layer 1's memory alone sets the receptive field
            variants.append(
                Variant(
                    f"lag {lag} / mem {mem}",
                    memory=f"0,{mem}",
                    set=[f"data.synthetic.lags=[{lag}]"],
                    group=f"lag {lag}",
                )
            )
    return Experiment(scale, base, variants, summary="receptive field against task lag", x_axis="receptive_field")
