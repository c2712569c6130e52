"""Sampling from a trained model, memory carried across chunks: a quick look at what it learned."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from txl.core.errors import TxlError
from txl.data.tokenizers import Tokenizer
from txl.model.transformer import TransformerXL


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top_k most likely tokens and the smallest set whose probability reaches top_p."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model: TransformerXL,
    prompt: list[int],
    n_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    chunk: int = 128,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield `n_tokens` sampled ids after reading `prompt` in chunks; one token per step after that."""
    if temperature <= 0:
        raise TxlError("--temperature must be > 0")
    device = next(model.parameters()).device
    model.eval()
    mems = None
    context = prompt or [0]
    for start in range(0, len(context) - 1, chunk):  # all but the last prompt token only fill the memory
        piece = torch.tensor([context[start : min(start + chunk, len(context) - 1)]], device=device)
        _, mems = model.hidden(piece, mems)
    last = torch.tensor([[context[-1]]], device=device)
    for _ in range(n_tokens):
        logp, mems = model(last, mems)
        logits = filter_logits(logp[0, -1].float() / temperature, top_k, top_p)
        token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
        yield token
        last = torch.tensor([[token]], device=device)


def generate_text(
    model: TransformerXL,
    tokenizer: Tokenizer,
    prompt: str,
    n_tokens: int,
    seed: int = 0,
    on_piece: Callable[[str], None] | None = None,
    **kw,
) -> str:
    ids = [int(i) for i in tokenizer.encode(prompt.encode("utf-8"))] if prompt else []
    words = tokenizer.unit == "word"
    if words and ids and not prompt.endswith("\n") and tokenizer.decode(ids[-1:]).endswith("\n"):
        ids = ids[:-1]  # the word tokenizer ends every line with <eos>; a prompt that does not end a line goes on
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out: list[int] = []
    shown = ""
    if words and prompt and not prompt[-1].isspace() and on_piece is not None:
        on_piece(" ")  # words are joined by spaces: the first sampled word is not glued to the prompt's last
    for token in sample(model, ids, n_tokens, generator=gen, **kw):
        out.append(token)
        if on_piece is not None:
            text = tokenizer.decode(out)
            if not text.endswith("\ufffd"):  # wait for a whole UTF-8 character
                on_piece(text[len(shown) :])
                shown = text
    text = tokenizer.decode(out)
    if on_piece is not None and len(text) > len(shown):
        on_piece(text[len(shown) :])
    return text
