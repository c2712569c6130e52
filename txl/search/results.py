"""A plan search's outputs: its table, its files (JSON, Markdown, plot) and its rows in an experiment's results."""

from __future__ import annotations

from pathlib import Path

from txl.core.errors import TxlError
from txl.core.io import atomic_write_json, atomic_write_text, pyplot
from txl.core.table import render_table
from txl.data import Corpus
from txl.plan.language import parse_plan
from txl.search.choices import CHOICES
from txl.search.search import UNITS, Search


def read_search(path) -> dict:
    """A saved plan search (plan-BUDGET.json), checked where txl reads it back; a damaged one is one line naming it."""
    import json

    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TxlError(f"cannot read the plan search {path}: {type(e).__name__}") from None
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    plans = record.get("plans") if isinstance(record, dict) else None
    whole = (
        isinstance(plans, list)
        and plans
        and all(
            isinstance(r, dict)
            and isinstance(r.get("how"), str)
            and number(r.get("cost"))
            and isinstance(r.get("mem_lens"), list)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in r["mem_lens"])
            and _chosen_whole(r)
            for r in plans
        )
        and number(record.get("budget"))
        and isinstance(record.get("unit"), str)
        and isinstance(record.get("lengths"), list)
    )
    if not whole:
        raise TxlError(f"the plan search {path} is damaged (not the record txl plan writes); run the search again")
    return record


def _chosen_whole(row: dict) -> bool:
    """What a plan row says the search chose beside its lengths: flag name -> a plan of one value per layer."""
    chosen = row.get("chosen", {})
    if not isinstance(chosen, dict) or set(chosen) - set(CHOICES):
        return False
    try:
        for flag, text in chosen.items():
            parse_plan(text, len(row["mem_lens"]), CHOICES[flag][1])
    except (ValueError, TypeError, AttributeError, TxlError):
        return False
    return True


def search_rows(search: Search) -> list[dict]:
    """The best plan, then the references, then everything else evaluated: one plain dict per plan."""
    order = [search.best, *[r for r in search.references if r is not search.best]]
    order += [e for e in search.evaluated if all(e is not o for o in order)]
    rows = []
    for e in order:
        d = search.versus_best(e) if e is not search.best else None
        rows.append(
            {
                "how": e.how,
                "memory": e.memory,
                "mem_lens": e.mem_lens,
                **({"chosen": e.texts} if e.chosen else {}),
                "label": e.label,
                "cost": e.cost,
                "receptive_field": e.receptive_field,
                "within_budget": e.cost <= search.limit + 1e-9,
                "loss": e.loss,
                "held_out_loss": e.held_out_loss,
                "chosen_on": "first half" if e.halves else "all",
                "predicted": e.predicted,
                "metrics": e.result.scalars(),
                "vs_best": None if d is None else {"mean": d.mean, "lo": d.lo, "hi": d.hi},
            }
        )
    return rows


def write_search(search: Search, out_dir, title: str, metric: str, tag: str = "") -> Path:
    """STEM.json (every plan evaluated), STEM.md and STEM.png under out_dir, STEM = plan-BUDGET[MiB][TAG]; returns
    STEM (TAG: what else sets this search apart, e.g. -int8 for memory stored as int8)."""
    stem = Path(out_dir) / (
        f"plan-{search.limit:g}{'' if search.unit == 'positions' else 'MiB'}{tag}"
        + ("" if search.split == "valid" else f"-{search.split}")
    )
    record = {
        "title": title,
        "split": search.split,
        "unit": search.unit,
        "budget": search.limit,
        "lengths": search.lengths,
        "settings": search.settings,
        "metric": metric,
        "best": search.best.label,
        "plans": search_rows(search),
    }
    atomic_write_json(f"{stem}.json", record)
    atomic_write_text(f"{stem}.md", f"# {title}\n\n{search_table(search, metric, 'markdown')}\n")
    plot_search(search, f"{stem}.png", title)
    return stem


def append_plan_search(exp, root, search: Search, run, folder, corpus: Corpus, tgt_len: int) -> int:
    """Append the best plan and the reference plans to experiment `exp`'s results, one row each, named by the
    budget, so `txl report` draws them beside the experiment's own variants. Returns how many rows were new
    (a search repeated on the same model, split and budget adds none)."""
    from pathlib import Path

    from txl.study.registry import results_path
    from txl.study.results import append_result, config_hash, result_row

    added = 0
    refs = [(", ".join(h for h in r.how.split(", ") if h.startswith("lrm=")), r) for r in search.references]
    for label, e in [("searched", search.best), *refs]:
        digest = config_hash(
            {
                "plan_search": str(Path(folder).resolve()),
                "memory": e.mem_lens,
                **({"chosen": e.texts} if e.chosen else {}),
                "split": search.split,
                "budget": search.limit,
                "unit": search.unit,
                "tgt_len": tgt_len,
                "settings": search.settings,
            }
        )
        row = result_row(
            exp,
            f"{label} (budget {search.limit:g})",
            "eval",
            run.train.seed,
            digest,
            e.result.to_dict(),
            e.plan.apply(run.model),
            tgt_len,
            Path(folder),
            corpus.identity(),
            0.0,
            group="",
        )
        added += append_result(results_path(Path(root), exp), row)
    return added


def search_notes(search: Search, stem, seconds: float, path: str, segments: int | None) -> list[str]:
    """The lines `txl plan` prints under its table: what was left out, the best plan, and the command that checks it."""
    lines, best = [], search.best
    shown = 1 + len(search.references) + 5
    if len(search.evaluated) > shown:
        lines.append(f"           ({len(search.evaluated) - shown} more plans in {stem}.md, in budget first)")
    if search.split != "valid":
        lines.append(f"note       chosen on {search.split}: its score there is not a fair {search.split} score")
    scored = f"loss {best.result.loss:.4f}" + (
        f": {best.loss:.4f} on the half of the text it was chosen on, {best.held_out_loss:.4f} on the other"
        if best.halves
        else ""
    )
    lines.append(f"best plan  {best.label} ({scored}; cost {best.cost:g})")
    lines.append(f"           {len(search.evaluated)} plans evaluated in {seconds:.0f} s")
    if best.halves:
        lines.append(
            "           differences from the best are measured on the held-out half (selection is not counted twice)"
        )
    lines.append(
        f"check it   txl eval {path} --memory {best.memory} --split {search.split}"
        + "".join(f" --{flag.replace('_', '-')} {text}" for flag, text in best.texts.items())
        + (f" --max-segments {segments}" if segments else "")
    )
    return lines


def search_table(search: Search, metric: str, fmt: str = "text", most: int | None = None) -> str:
    """The best plan, the references, then (up to `most`) the other plans evaluated, best first."""

    rows = search_rows(search)
    head = rows[: 1 + len(search.references)]
    rest = sorted(
        rows[1 + len(search.references) :], key=lambda r: (not r["within_budget"], r["loss"])
    )  # in budget first
    rows = head + (rest if most is None else rest[:most])
    unit = "cached" if search.unit == "positions" else "MiB/seq"
    halves = search.best.halves
    headers = [
        "found as",
        "memory plan",
        unit,
        "receptive field",
        "loss, 1st half (chosen on)" if halves else "loss (nats)",
        *(["loss, 2nd half (held out)"] if halves else []),
        metric,
        "- best [95%, blocks" + (", 2nd half]" if halves else "]"),
        "in budget",
    ]
    table = []
    for r in rows:
        d = r["vs_best"]
        table.append(
            [
                r["how"],
                r["label"],
                f"{r['cost']:g}",
                r["receptive_field"],
                f"{r['loss']:.4f}",
                *([f"{r['held_out_loss']:.4f}"] if halves else []),
                f"{r['metrics'].get(metric, float('nan')):.4f}",
                "best" if d is None else f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]",
                "yes" if r["within_budget"] else "no",
            ]
        )
    return render_table(headers, table, fmt)


def plot_search(search: Search, path, title: str) -> None:
    """Every evaluated plan's loss against its cost, the budget as a line, the best and the references marked."""
    plt = pyplot()

    from txl.core.io import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    kinds = {"sensitivity": ("C0", "o"), "predicted": ("C1", "s"), "refined": ("C2", "D"), "as trained": ("black", "^")}
    for kind, (color, marker) in kinds.items():
        sel = [e for e in search.evaluated if e.how.split(", ")[0] == kind]
        if sel:
            ax.scatter(
                [e.cost for e in sel], [e.loss for e in sel], c=color, marker=marker, s=22, alpha=0.7, label=kind
            )
    for n, e in enumerate(search.references):
        ax.scatter(
            [e.cost],
            [e.loss],
            marker="x",
            s=60,
            c=f"C{n + 3}",
            label=", ".join(h for h in e.how.split(", ") if h.startswith("lrm=")),
        )
    ax.scatter(
        [search.best.cost],
        [search.best.loss],
        marker="*",
        s=220,
        c="gold",
        edgecolors="black",
        zorder=5,
        label=f"best: {search.best.label}",
    )
    ax.axvline(search.limit, color="gray", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(UNITS[search.unit])
    ax.set_ylabel("loss (nats/token)")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
