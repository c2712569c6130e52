"""Synthetic long-range tasks with a known dependency distance (after Wang & E, NeurIPS 2024).

Each task is a token stream of random data symbols with occasional queries: a query
token followed by an answer that is a function of tokens at known distances before
the answer. Only answers are scored (the mask), so accuracy measures whether the
model can reach back that far:

  copy     answer = (sum of the tokens `lags` back) mod symbols        fixed sparse memory
  pointer  one query token per lag; the query picks which lag to copy   adaptive sparse memory
  decay    answer = sign of sum_d rho(d) * value(token d back)          essentially sparse memory

A lag of L means the answer at position a depends on the token at a - L; the model
predicts it from the query at a - 1, so the top layer needs a reach of L - 1 there.
"""

from __future__ import annotations

import numpy as np

from txl.config import SyntheticConfig
from txl.data.tokenizers import Tokenizer

TASKS = ("copy", "pointer", "decay")


class SyntheticTokenizer(Tokenizer):
    """Data symbols 0..K-1, then the task's query and answer tokens."""

    kind = "synthetic"
    unit = "token"

    def __init__(self, symbols: list[str]):
        self.symbols = symbols

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, data: bytes) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.symbols)}
        return np.array([index[s] for s in data.decode().split()], dtype=np.uint8)

    def decode(self, ids) -> str:
        return " ".join(self.symbols[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols}


def vocabulary(task: str, cfg: SyntheticConfig) -> list[str]:
    data = [str(i) for i in range(cfg.symbols)]
    if task == "copy":
        return data + ["?"]
    if task == "pointer":
        return data + [f"?{lag}" for lag in cfg.lags]
    return data + ["?", "-", "+"]


def required_reach(cfg: SyntheticConfig) -> int:
    """The reach the top layer needs at a query to see every token its answer depends on."""
    return max(cfg.lags) - 1


def chance_accuracy(task: str, cfg: SyntheticConfig) -> float:
    return 0.5 if task == "decay" else 1.0 / cfg.symbols


def generate(task: str, cfg: SyntheticConfig, n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, answer mask) of one split; deterministic in (task, cfg, n_tokens, seed)."""
    rng = np.random.default_rng([seed, TASKS.index(task), n_tokens])
    k = cfg.symbols
    tokens = rng.integers(0, k, size=n_tokens, dtype=np.int64)
    mask = np.zeros(n_tokens, dtype=bool)
    span = max(cfg.lags)
    # Query positions: gaps drawn geometrically, none before the first full look-back. An
    # answer never copies a query token (a constant would make one answer likelier than
    # the rest), so a query whose lags land on one moves on; answers stay uniform.
    is_query = np.zeros(n_tokens, dtype=bool)
    t = span
    queries = []
    while True:
        t += int(rng.geometric(1.0 / cfg.query_every))
        while t + 1 < n_tokens and task != "decay" and any(is_query[t + 1 - lag] for lag in cfg.lags):
            t += 1
        if t + 1 >= n_tokens:
            break
        queries.append(t)
        is_query[t] = True
        t += 1  # the answer's slot
    value = tokens.copy()  # what a position contributes to later answers; query and answer tokens of decay count 0
    if task == "decay":
        dists = np.arange(2, span + 1)  # every token from the one before the query back to the longest lag
        steps = (dists - 1).astype(np.float64)
        rho = np.exp(-steps / cfg.decay_scale) if cfg.decay == "exp" else steps ** (-cfg.decay_scale)
        signed = np.where(tokens < k / 2, 1.0, -1.0)
    for q in queries:
        a = q + 1
        if task == "copy":
            tokens[q] = k
            tokens[a] = sum(value[a - lag] for lag in cfg.lags) % k
        elif task == "pointer":
            i = int(rng.integers(len(cfg.lags)))
            tokens[q] = k + i
            tokens[a] = value[a - cfg.lags[i]]
        else:
            tokens[q] = k
            tokens[a] = k + 2 if float(rho @ signed[a - dists]) > 0 else k + 1
            signed[q] = signed[a] = 0.0
        value[q] = 0
        value[a] = tokens[a] if tokens[a] < k else 0
        mask[a] = True
    return tokens.astype(np.uint8), mask
