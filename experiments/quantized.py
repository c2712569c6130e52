"""Quantized memory: the cached hidden states of each layer stored in fewer bytes (txl.model.quantize).

KV-cache quantization (KIVI, KVQuant) reports little loss at 2 to 4 bits; Transformer-XL caches
hidden states, not keys and values, so how much of that carries over is what this measures.
One model is trained with full-precision memory; its memory is then stored at each precision in
every layer, and at int4 in the bottom or the top half alone, at evaluation time. A model
trained with int8 memory throughout sits beside them. Plot against memory bytes
(`txl report memory/quantized --x-axis memory_bytes`, the experiment's default).
"""

from __future__ import annotations

from experiments.common import lm_base, memory_lengths
from txl.model.plans import apply_plans
from txl.model.quantize import MEMORY_DTYPES
from txl.study.registry import Experiment, Variant, experiment

TRAINED = "fp32 (trained)"


@experiment("memory/quantized", "memory stored as fp32, bf16, fp16, fp8, int8, int4 in every layer, or int4 in half")
def quantized(scale: str) -> Experiment:
    base = lm_base(scale)
    long, _ = memory_lengths(scale)
    base.model = apply_plans(base.model, memory=str(long))
    half = base.model.n_layer // 2
    variants = [Variant(TRAINED, memory=str(long)), Variant("int8 (trained)", memory=str(long), memory_dtype="int8")]
    variants += [Variant(d, of=TRAINED, memory_dtype=d) for d in MEMORY_DTYPES if d != "fp32"]
    variants += [
        Variant("int4 bottom half", of=TRAINED, memory_dtype=f"dtype=int4@first:{half},fp32"),
        Variant("int4 top half", of=TRAINED, memory_dtype=f"dtype=int4@last:{half},fp32"),
    ]
    return Experiment(
        scale, base, variants, summary="memory precision per layer", x_axis="memory_bytes", baseline=TRAINED
    )
