"""A memory family in one module: strided memory, the states a layer's recent memory evicts kept every k-th, up to n
of them (`--strided n/k`). Its definition and registration are the first lines below; no other file knows it, yet
the model keeps it, budgets count it, training saves it in the config and evaluation applies it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cache_bytes, tiny_config

from txl.cli import main
from txl.model.budget import budget
from txl.model.dimensions import Dimension, register_dimension, unregister_dimension
from txl.model.plans import MemoryPlan, apply_plans
from txl.model.transformer import TransformerXL
from txl.plan.language import PlanError, PlanKind


def _parse(text: str) -> str:
    n, _, k = text.partition("/")
    if not (n.isdigit() and (k.isdigit() or not k)) or (k and int(k) < 1):
        raise ValueError(f"a strided memory is N/K (keep every K-th evicted state, up to N), or 0; got {text!r}")
    return "0" if int(n) == 0 else f"{int(n)}/{int(k or 1)}"


def _sizes(value: str) -> tuple[int, int]:
    n, _, k = value.partition("/")
    return int(n), int(k or 1)


def _keep(value: str, evicted, kept):
    """Every k-th evicted state (the last of each k), appended to what was kept, the newest n kept."""
    n, k = _sizes(value)
    if evicted is None:
        return kept
    picked = evicted[:, k - 1 :: k]
    both = picked if kept is None else torch.cat([kept, picked], dim=1)
    return both[:, -n:].clone() if both.size(1) > n else both


STRIDED = Dimension(
    PlanKind("strided memory", ("strided",), _parse, str, "0"),
    "strided",
    "strided",
    "every K-th evicted state kept, up to N, per layer: N/K, e.g. 'strided=8/4@last:1,0' (default 0)",
    positions=lambda value: _sizes(value)[0],
    keep=_keep,
)


@pytest.fixture
def strided():
    yield register_dimension("strided", STRIDED)
    unregister_dimension("strided")


def test_a_layer_keeps_every_kth_evicted_state_and_attends_to_them(strided):
    torch.manual_seed(0)
    model = TransformerXL(tiny_config(n_layer=1, memory="4", strided="6/2")).eval()
    tokens = torch.randint(0, 23, (2, 20))
    embedded = model.embed(tokens)  # layer 0 caches its input
    mems, outs = None, []
    with torch.no_grad():
        for start in range(0, 20, 4):
            out, mems = model.hidden(tokens[:, start : start + 4], mems)
            outs.append(out)
    # after 5 segments of 4: states 0..15 were evicted, every 2nd kept (1, 3, ..., 15), the newest 6
    torch.testing.assert_close(mems[0].kept["strided"].values, embedded[:, [5, 7, 9, 11, 13, 15]], rtol=0, atol=0)
    torch.testing.assert_close(mems[0].recent.values, embedded[:, 16:20], rtol=0, atol=0)
    assert mems[0].positions == 10 and cache_bytes(mems) == budget(model.cfg, 4, batch=2).bytes
    kept = mems[0].kept["strided"].values
    assert kept.untyped_storage().nbytes() == kept.numel() * kept.element_size()  # no view of [mem; h] kept alive
    plain = TransformerXL(tiny_config(n_layer=1, memory="4"))
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        p, pm = plain.eval().hidden(tokens[:, :4], None)
        for start in range(4, 12, 4):
            p, pm = plain.hidden(tokens[:, start : start + 4], pm)
    assert not torch.allclose(p, outs[2])  # what the family keeps is attended to
    with torch.no_grad(), plain.memory_plan(MemoryPlan.parse(1, strided="6/2")):  # applied at evaluation only
        _, cut = plain.hidden(tokens[:, :4], None)
        _, cut = plain.hidden(tokens[:, 4:8], cut)
    torch.testing.assert_close(cut[0].kept["strided"].values, embedded[:, [1, 3]], rtol=0, atol=0)
    assert plain.layers[0].families == []  # and gone with the plan


def test_it_is_stored_at_the_layers_memory_dtype_and_counted_in_the_budget(strided):
    cfg = tiny_config(n_layer=2, memory="4", strided="8/2", memory_dtype="int8")
    model = TransformerXL(cfg)
    mems = None
    for _ in range(6):
        _, mems = model(torch.randint(0, 23, (3, 4)), mems)
    assert mems[1].kept["strided"].values.dtype == torch.int8
    assert cache_bytes(mems) == budget(cfg, 4, batch=3).bytes
    assert budget(cfg, 4).cached_positions == budget(tiny_config(n_layer=2, memory="4"), 4).cached_positions + 16


def test_it_trains_from_the_command_line_and_evaluation_changes_it(strided, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--run-dir", str(run), "--steps", "2", "--no-progress"]
    assert main([*argv, "--memory", "8", "--strided", "strided=8/4@last:1,0"]) == 0
    layers = json.loads((run / "config.json").read_text())["model"]["layers"]
    assert layers[-1]["extra"] == {"strided": "8/4"} and "extra" not in layers[0]
    assert main(["eval", str(run), "--strided", "4/2", "--max-segments", "4", "--no-progress"]) == 0
    assert "strided 4/2" in capsys.readouterr().out  # the plan evaluated, named for it
    with pytest.raises(PlanError, match="keep every K-th"):
        apply_plans(tiny_config(), strided="x")
