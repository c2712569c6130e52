"""Ask a trained model which layers use their memory, then search the plan that loses least for a budget.

One model keeps a long memory in every layer (Rae & Razavi's all-LRM model). Once it is
trained (each seed), the experiment measures where each layer looks, the loss as the usable
context is cut (Khandelwal et al., 2018), each layer's sensitivity to a cut memory, and
searches the memory plan of least validation loss within the budget of one long-range
layer (`lrm=1@interleave`), with Rae & Razavi's plans of that budget (first, interleaved,
last) beside it. Their rows join the results, so `txl report` draws them with intervals
over seeds; `txl run ... --test` scores the chosen plans on the test split once.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.common import lm_base, memory_lengths
from txl.analysis import (
    attention_mass, context_curve, effective_context, image_to_tensorboard, layer_sensitivity, plot_attention, plot_context,
    write_sensitivity,
)
from txl.data import load_corpus
from txl.devices import pick_precision
from txl.errors import TxlError
from txl.evaluate import Plan, metric_name
from txl.experiments import Experiment, Variant, experiment, results_path, run_dir
from txl.io import atomic_write_json
from txl.memory import MEMORY, parse_plan
from txl.planning import append_plan_search, plan_cost, rescore, search_plan, write_search
from txl.results import read_results
from txl.plans import apply_plans
from txl.runs import load_trained

TRAINED = "all long"


def one_long_layer(run, scale: str, base: Plan | None = None) -> float:
    """The budget searched: the cached positions of lrm=1@interleave (one long-range layer, the rest short)."""
    long, short = memory_lengths(scale)
    lens = parse_plan(f"lrm=1@interleave:{long},srm={short}", run.model.n_layer, MEMORY)
    return plan_cost(run.model, lens, run.eval.tgt_len or run.train.tgt_len, "positions", base or Plan.of_run(run))


def analyse(exp: Experiment, root: Path, split: str, say) -> None:
    """Analyses 1-4 of every seed's trained model (each skipped when its files are there), on `split`, at the
    budget `plan_search` names its baseline by (one_long_layer)."""
    long, short = memory_lengths(exp.scale)
    for seed in exp.seeds:
        folder = run_dir(root, exp, TRAINED, seed)
        model, run, _ = load_trained(folder, exp.base.train.device)
        corpus = load_corpus(run.data, progress=False)
        e, out = run.eval, folder / "analysis"
        tgt_len, segments = e.tgt_len or run.train.tgt_len, e.max_segments
        precision = pick_precision(run.train.precision, next(model.parameters()).device)
        base = Plan.of_run(run)
        limit = one_long_layer(run, exp.scale, base)
        stem = out / f"plan-{limit:g}"
        if split != "valid":  # report: the plans valid chose, scored on this split once (the rows say which)
            scored = {(r["seed"], r["metrics"].get("split")) for r in read_results(results_path(root, exp))
                      if r["variant"] == f"searched (budget {limit:g})"}
            if (seed, split) in scored:
                continue  # scored once already
            if not Path(f"{stem}.json").exists():
                raise TxlError(f"no plan search at {stem}.json to score on {split}; run 'txl run {exp.name} --scale {exp.scale}' first")
            search = rescore(json.loads(Path(f"{stem}.json").read_text()), model, corpus, split, tgt_len, e.batch_size,
                             segments, precision, base)
            append_plan_search(exp, root, search, run, folder, corpus, tgt_len)
            continue
        where, made = f"{exp.name} seed {seed}", []
        if not (out / "attention.json").exists():
            say(f"{where}: where each layer looks")
            mass = attention_mass(model, corpus, split, tgt_len, e.batch_size, segments, precision)
            title = f"where each layer looks: {TRAINED} ({exp.scale}, seed {seed}), {split} split"
            plot_attention(mass, out / "attention.png", title)
            atomic_write_json(out / "attention.json", {"title": title, **mass})
            made.append("attention")
        if not (out / "context.json").exists():
            say(f"{where}: context ablation")
            lengths = sorted({0, 4, 16, 64, 4 * long} | {long})
            curve = context_curve(model, corpus, split, lengths, segment=tgt_len, precision=precision)
            plot_context({TRAINED: curve}, out / "context.png", f"context ablation: {TRAINED} ({exp.scale}, seed {seed}), {split} split")
            atomic_write_json(out / "context.json", {"split": split, "curves": {TRAINED: curve},
                                                     "effective_context": {TRAINED: effective_context(curve)}})
            made.append("context")
        if not (out / "sensitivity.json").exists():
            say(f"{where}: per-layer memory sensitivity")
            trained, rows = layer_sensitivity(model, corpus, split, tgt_len, e.batch_size, segments, precision, short)
            write_sensitivity(trained, rows, corpus, out, f"memory sensitivity: {TRAINED} ({exp.scale}, seed {seed}), {split} split")
            made.append("sensitivity")
        if not Path(f"{stem}.json").exists():
            say(f"{where}: the best plan within {limit:g} cached positions (the budget of lrm=1@interleave)")
            search = search_plan(model, corpus, split, tgt_len, e.batch_size, segments, limit, "positions",
                                 precision=precision, say=lambda s: say(f"  {s}"), base_plan=base, long=long, short=short)
            append_plan_search(exp, root, search, run, folder, corpus, tgt_len)  # the rows first: the file marks it done
            write_search(search, out, f"plan search: {TRAINED} ({exp.scale}, seed {seed}), budget {limit:g}, {split} split",
                         metric_name(corpus))
            made.append(stem.name)
        for name in made:  # beside the training curves, in TensorBoard's Images
            image_to_tensorboard(out / f"{name}.png", folder / "tb", f"analysis/{name}")


@experiment("analysis/plan-search", "the all-long-memory model analysed, and its best plan at the budget of one long-range layer")
def plan_search(scale: str) -> Experiment:
    base = lm_base(scale)
    long, _ = memory_lengths(scale)
    base.model = apply_plans(base.model, memory=str(long))
    return Experiment(
        "analysis/plan-search",
        "which layers use their memory, and the plan that loses least at the budget of one long-range layer",
        scale, base, [Variant(TRAINED, memory=str(long))], after=analyse,
        baseline=f"searched (budget {one_long_layer(base, scale):g})",  # a row the analysis adds: each plan's difference from the searched one
    )
