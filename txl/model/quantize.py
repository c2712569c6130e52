"""Cached hidden states stored in fewer bytes: per-layer memory dtypes, quantized with per-position scales.

A layer's memory dtype (`LayerConfig.mem_dtype`, the plan dimension `dtype`, `--memory-dtype`)
says how the hidden states it caches between segments are stored; they are dequantized to the
model's dtype where a layer attends to them, so every attention path sees the same values.

    fp32   kept as computed (the model's own precision): today's memory, bit for bit
    bf16   bfloat16, rounded to nearest: relative error at most 2^-8
    fp16   float16: relative error at most 2^-11 within its range (|x| < 65504)
    fp8    float8 e4m3 of x / s, s = max|x| / 448 per position: error at most 2^-4 |x| + 2^-10 s
    int8   round(x / s), s = max|x| / 127 per position: error at most s / 2
    int4   round(x / s) in -7..7, s = max|x| / 7 per position, two values a byte: error at most s / 2

The scale s is one float32 per cached position (over the model dimension), so a layer of M
positions and width D costs M * D * bits / 8 bytes plus 4 * M for fp8, int8 and int4
(`stored_bytes`, which txl.model.budget counts and the tests hold to the tensors' own storage).
The memory carries no gradient, so training through a quantized memory needs nothing more.
"""

from __future__ import annotations

import torch

BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "int4": 4}
MEMORY_DTYPES = tuple(BITS)
SCALED = ("fp8", "int8", "int4")  # stored beside a float32 scale per position
SCALE_BYTES = 4
_LEVELS = {"fp8": 448.0, "int8": 127.0, "int4": 7.0}  # the largest magnitude each stores


def stored_bytes(dtype: str, positions: int, width: int, full_bytes: int = 4) -> int:
    """Bytes that `positions` cached states of `width` take in `dtype` (fp32: `full_bytes` each, the model's)."""
    if dtype == "fp32":
        return positions * width * full_bytes
    values = positions * width * BITS[dtype] // 8
    return values + (positions * SCALE_BYTES if dtype in SCALED else 0)


def quantize(h: torch.Tensor, dtype: str, key: str = "h") -> dict[str, torch.Tensor]:
    """(B, M, D) hidden states as a layer's memory stores them: {key: values} and, for the scaled kinds,
    {key + "_scale": (B, M, 1) float32}. fp32 returns `h` itself. `key`: "h" for the memory, "sink" for sinks."""
    return {(key if name == "h" else f"{key}_scale"): t for name, t in _quantize(h, dtype).items()}


def _quantize(h: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    if dtype == "fp32":  # in storage of its own already (txl.plan.language copies what it keeps out of longer tensors)
        return {"h": h}
    if dtype == "bf16":
        return {"h": h.to(torch.bfloat16, copy=True)}  # a copy: never a view of the longer [mem; h]
    if dtype == "fp16":
        return {"h": h.to(torch.float16, copy=True)}
    x = h.float()
    scale = x.abs().amax(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / _LEVELS[dtype]
    if dtype == "fp8":
        return {"h": (x / scale).to(torch.float8_e4m3fn), "h_scale": scale}
    q = torch.round(x / scale).clamp(-_LEVELS[dtype], _LEVELS[dtype]).to(torch.int8)
    if dtype == "int4":  # two values a byte: even positions of the width in the low nibble, odd in the high
        nibbles = (q & 0xF).to(torch.uint8)
        q = nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)
    return {"h": q, "h_scale": scale}


def dequantize(state: dict[str, torch.Tensor], dtype: torch.dtype, key: str = "h") -> torch.Tensor | None:
    """The cached states of a layer's memory (`quantize`'s output) in `dtype`, or None when it holds none."""
    q = state.get(key)
    if q is None:
        return None
    scale = state.get(f"{key}_scale")
    if scale is None:
        return q if q.dtype == dtype else q.to(dtype)
    if q.dtype == torch.uint8:  # int4: unpack, then sign-extend each nibble
        low, high = (q & 0xF).to(torch.int8), (q >> 4).to(torch.int8)
        both = torch.stack([low, high], dim=-1).flatten(-2)
        q = torch.where(both > 7, both - 16, both)
    return (q.float() * scale).to(dtype)


def check_dtype(name: str) -> str:
    if name not in BITS:
        raise ValueError(f"unknown memory dtype {name!r} (use {', '.join(MEMORY_DTYPES)})")
    return name
