"""Ask a trained model which layers use their memory, then search the plan that loses least for a budget.

One model keeps a long memory in every layer (Rae & Razavi's all-LRM model). Once it is
trained (each seed), the experiment measures where each layer looks, the loss as the usable
context is cut (Khandelwal et al., 2018), each layer's sensitivity to a cut memory, and
searches the memory plan of least validation loss within the budget of one long-range
layer (`lrm=1@interleave`), with Rae & Razavi's plans of that budget (first, interleaved,
last) beside it. Their rows join the results, so `txl report` draws them with intervals
over seeds; `txl run ... --test` scores the chosen plans on the test split once.

A cut of a trained model is not Rae & Razavi's recipe, which trains with the plan. So the
experiment also trains their plans of that budget from scratch, and, once seed 0's search has
chosen, trains the chosen plan from scratch and adapts each seed's all-long model to it: three
groups of rows at one budget (cut at evaluation, adapted, trained), compared paired by seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from experiments.common import adapt_steps, lm_base, memory_lengths
from txl.core.errors import TxlError
from txl.core.io import atomic_write_json
from txl.evaluation.analysis import (
    attention_mass,
    image_to_tensorboard,
    layer_sensitivity,
    plot_attention,
    write_sensitivity,
)
from txl.evaluation.context_ablation import context_curve, effective_context, plot_context
from txl.evaluation.evaluate import EvalSpec, metric_name
from txl.model.plans import MemoryPlan, apply_plans
from txl.plan.language import MEMORY, format_plan, parse_plan
from txl.search.results import append_plan_search, read_search, write_search
from txl.search.search import plan_cost, rescore, search_plan
from txl.study.registry import Experiment, Variant, experiment, results_path, run_dir
from txl.study.results import read_results
from txl.study.sweep import run_job
from txl.train.runs import Trained, load_trained

log = logging.getLogger(__name__)

TRAINED = "all long"


def one_long_layer(run, scale: str, base: MemoryPlan | None = None) -> float:
    """The budget searched: the cached positions of lrm=1@interleave (one long-range layer, the rest short)."""
    long, short = memory_lengths(scale)
    lens = parse_plan(f"lrm=1@interleave:{long},srm={short}", run.model.n_layer, MEMORY)
    spec = EvalSpec.for_run(run)
    return plan_cost(run.model, lens, spec.tgt_len, "positions", base or spec.plan)


def analyse(exp: Experiment, root: Path, split: str) -> None:
    """Analyses 1-4 of every seed's trained model (each skipped when its files are there), on `split`, at the
    budget `plan_search` names its baseline by (one_long_layer); then the plan seed 0's search chose, trained
    from scratch and adapted from the all-long model with every seed (`train_searched`)."""
    for seed in exp.seeds:
        trained = load_trained(run_dir(root, exp, TRAINED, seed), exp.base.train.device)
        spec = trained.spec(split=split)
        limit = one_long_layer(trained.run, exp.scale, spec.plan)
        if split != "valid":  # report: the plans valid chose, scored on this split once (the rows say which)
            _score_chosen(exp, root, trained, spec, seed, limit)
        else:
            _analyse_seed(exp, root, trained, spec, seed, limit)
    train_searched(exp, root, split)


def train_searched(exp: Experiment, root: Path, split: str) -> None:
    """Like with like: the plan seed 0's model chose (on the first half of valid), trained from scratch and
    adapted from each seed's all-long model (`adapt_steps`), as variants added to the experiment here and run
    as its own jobs are (skipped when done), beside Rae & Razavi's plans trained and the evaluation-time cuts.
    On another split, their trained models are scored there once."""
    folder = run_dir(root, exp, TRAINED, exp.seeds[0])
    run = load_trained(folder, exp.base.train.device).run
    limit = one_long_layer(run, exp.scale)
    path = folder / "analysis" / f"plan-{limit:g}.json"
    if not path.exists():
        raise TxlError(f"no plan search at {path}; run 'txl run {exp.name} --scale {exp.scale}' first")
    plan = format_plan(read_search(path)["plans"][0]["mem_lens"])  # best first
    name = f"searched (budget {limit:g})"
    ours = [
        Variant(f"{name}, trained", memory=plan),
        Variant(f"{name}, adapted", of=TRAINED, memory=plan, adapt_steps=adapt_steps(exp.scale)),
    ]
    exp.variants += [v for v in ours if v.name not in {w.name for w in exp.variants}]
    for v in ours:
        for seed in exp.seeds:
            log.info(f"{exp.name}: {v.name} ({plan}), seed {seed}")
            run_job(exp, root, f"{v.name}/seed{seed}", None if split == exp.base.eval.split else split)


def _score_chosen(exp: Experiment, root: Path, trained: Trained, spec: EvalSpec, seed: int, limit: float) -> None:
    """The plans valid chose for this seed, scored once on spec's split, in rows of their own."""
    stem = trained.root / "analysis" / f"plan-{limit:g}"
    scored = {
        (r.seed, r.split)
        for r in read_results(results_path(root, exp), warn=False)
        if r.variant == f"searched (budget {limit:g})"
    }
    if (seed, spec.split) in scored:
        return  # scored once already
    if not Path(f"{stem}.json").exists():
        raise TxlError(
            f"no plan search at {stem}.json to score on {spec.split}; "
            f"run 'txl run {exp.name} --scale {exp.scale}' first"
        )
    corpus = trained.corpus(spec)
    search = rescore(read_search(f"{stem}.json"), trained.model, corpus, spec)
    append_plan_search(exp, root, search, trained.run, trained.root, corpus, spec.tgt_len)


def _analyse_seed(exp: Experiment, root: Path, trained: Trained, spec: EvalSpec, seed: int, limit: float) -> None:
    """Where each layer looks, the context ablation, the sensitivities and the plan search, each once."""
    long, short = memory_lengths(exp.scale)
    model, corpus, out, split = trained.model, trained.corpus(spec), trained.root / "analysis", spec.split
    stem = out / f"plan-{limit:g}"
    where, made, named = f"{exp.name} seed {seed}", [], f"{TRAINED} ({exp.scale}, seed {seed})"
    if not (out / "attention.json").exists():
        log.info(f"{where}: where each layer looks")
        mass = attention_mass(model, corpus, spec)
        title = f"where each layer looks: {named}, {split} split"
        plot_attention(mass, out / "attention.png", title)
        atomic_write_json(out / "attention.json", {"title": title, **mass})
        made.append("attention")
    if not (out / "context.json").exists():
        log.info(f"{where}: context ablation")
        curve = context_curve(model, corpus, spec, sorted({0, 4, 16, 64, 4 * long} | {long}))
        plot_context({TRAINED: curve}, out / "context.png", f"context ablation: {named}, {split} split")
        effective = {TRAINED: effective_context(curve)}
        atomic_write_json(
            out / "context.json", {"split": split, "curves": {TRAINED: curve}, "effective_context": effective}
        )
        made.append("context")
    if not (out / "sensitivity.json").exists():
        log.info(f"{where}: per-layer memory sensitivity")
        as_trained, rows = layer_sensitivity(model, corpus, spec, short)
        write_sensitivity(as_trained, rows, corpus, out, f"memory sensitivity: {named}, {split} split")
        made.append("sensitivity")
    if not Path(f"{stem}.json").exists():
        log.info(f"{where}: the best plan within {limit:g} cached positions (the budget of lrm=1@interleave)")
        search = search_plan(model, corpus, spec, limit, "positions", long=long, short=short)
        # the rows first: the file marks it done
        append_plan_search(exp, root, search, trained.run, trained.root, corpus, spec.tgt_len)
        title = f"plan search: {named}, budget {limit:g}, {split} split"
        write_search(search, out, title, metric_name(corpus))
        made.append(stem.name)
    for name in made:  # beside the training curves, in TensorBoard's Images
        image_to_tensorboard(out / f"{name}.png", trained.root / "tb", f"analysis/{name}")


@experiment(
    "analysis/plan-search",
    "the all-long-memory model analysed, and its best plan at the budget of one long-range layer",
)
def plan_search(scale: str) -> Experiment:
    base = lm_base(scale)
    long, short = memory_lengths(scale)
    base.model = apply_plans(base.model, memory=str(long))
    rr = [f"lrm=1@{where}:{long},srm={short}" for where in ("first", "interleave")]  # at 6 layers interleave = last
    return Experiment(
        scale,
        base,
        [Variant(TRAINED, memory=str(long))] + [Variant(f"{p} (trained)", memory=p) for p in rr],
        summary="which layers use their memory, and the plan that loses least at the budget of one long-range layer: "
        "cut from the all-long model, trained, adapted, beside Rae & Razavi's plans trained",
        after=analyse,
        # a row the analysis adds: each plan's difference from the searched one
        baseline=f"searched (budget {one_long_layer(base, scale):g})",
    )
