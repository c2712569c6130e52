"""Published evaluation protocols by name, from the original Transformer-XL repository's scripts.

A protocol sets the segment length, the memory, clamp_len, same_length and the number of
parallel streams of an evaluation; `txl eval RUN --protocol NAME` uses it, and flags given
beside it win. The same_length window follows the model's own rule (txl import sets the
PyTorch rule for imported models; see model.same_length_rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from txl.core.errors import TxlError


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    tgt_len: int
    mem_len: int
    clamp_len: int
    same_length: bool = True
    batch_size: int = 10  # parallel streams
    split: str = "test"

    def settings(self) -> str:
        return (
            f"segments of {self.tgt_len}, memory {self.mem_len}, clamp_len {self.clamp_len}, "
            f"same_length {'on' if self.same_length else 'off'}, {self.batch_size} streams, {self.split} split"
        )


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("enwik8-base", "enwik8, the 12-layer base model", 80, 2100, 820),
        Protocol("enwik8-large", "enwik8, the 24-layer large model", 128, 3800, 1000),
        Protocol("text8-base", "text8, the 12-layer base model", 80, 2100, 820),
        Protocol("text8-large", "text8, the 24-layer large model", 128, 3800, 1000),
        Protocol("wt103-base", "WikiText-103, the 16-layer base model", 64, 640, 400),
        Protocol("wt103-large", "WikiText-103, the 18-layer large model", 128, 1600, 1000),
    )
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise TxlError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]
