"""The shape of the code (ARCHITECTURE.md): imports point one way, rooms stay small.

The import graph is read from the source with `ast`, function-level imports included,
so an import hidden inside a function to dodge a circle is still a circle here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("txl", "experiments")


def module_names() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in its body (module, class or function level)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path a -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from txl.plan.language import parse_plan\n    import txl.config\n")
    assert imports_of(src, "txl.m", module_names()) == {"txl.plan.language", "txl.config"}


def test_no_module_imports_itself_back():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# txl's packages, bottom to top: a module imports only from its own package and those before it (ARCHITECTURE.md)
PACKAGE_ORDER = (
    "core",  # errors, atomic files, tables, locks, signals, messages, statistics, scales, devices, ranks
    "config",  # one dataclass per component, field checks, strict JSON
    "plan",  # the plan language and receptive fields: no variant, no model
    "attention",  # the variants behind one interface, masks, fast paths
    "data",  # corpora, tokenizers, the token cache, streams
    "model",  # the plan object and its checks, the cache and its dtypes, the Transformer-XL, budgets
    "evaluation",  # what an evaluation is and its loop, protocols, generation, analyses
    "train",  # the loop and its parts, run folders, checkpoints, presets
    "interop",  # other layouts' weights
    "bench",  # benchmarks
    "study",  # the experiment registry, sweeps and jobs, results, reports, pairs
    "search",  # the plan search
    "cli",  # the command line: the only package that imports experiments/
)
ROOT_MODULES = 6  # at most, beside __init__ and __main__


def package_of(module: str) -> str | None:
    """The txl package a module belongs to (None for txl's own __init__, which any module may import)."""
    parts = module.split(".")
    if parts[0] != "txl" or len(parts) == 1:
        return None
    return "cli" if parts[1] == "__main__" else parts[1]


def test_every_module_is_in_a_package_of_the_order_and_the_root_holds_a_handful():
    loose = [n for n in module_names() if n.startswith("txl.") and package_of(n) not in PACKAGE_ORDER]
    assert len(loose) <= ROOT_MODULES, f"modules at txl/'s root (at most {ROOT_MODULES}): {loose}"
    assert not [n for n in loose if (ROOT / "txl" / n.split(".")[1]).is_dir()], "a package missing from PACKAGE_ORDER"


def test_imports_point_down_the_package_order():
    rank = {p: i for i, p in enumerate(PACKAGE_ORDER)}
    wrong = []
    for name, targets in import_graph().items():
        here = package_of(name)
        if here not in rank:
            continue
        for target in targets:
            there = package_of(target)
            if there in rank and rank[there] > rank[here]:
                wrong.append(f"{name} ({here}) imports {target} ({there})")
    assert not wrong, "imports that point up the package order:\n" + "\n".join(sorted(wrong))


def test_the_order_check_sees_an_import_that_points_up(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from txl.study.results import read_results\n")
    found = imports_of(src, "txl.core.m", module_names())
    assert found == {"txl.study.results"} and PACKAGE_ORDER.index("study") > PACKAGE_ORDER.index("core")


@pytest.mark.parametrize(
    "low, high",
    [
        ("txl.plan.reach", "txl.plan.language"),  # receptive fields need no plan language
        ("txl.study.registry", "txl.study.sweep"),  # the registry knows nothing of running
        ("txl.study.sweep", "txl.study.cluster"),  # running here knows nothing of jobs
        ("txl.study.cluster", "txl.study.launch"),
        ("txl.model.cache", "txl.model.transformer"),  # the cache update knows no model
    ],
)
def test_modules_within_a_package_point_down(low, high):
    assert high not in reaches(import_graph(), low) | {low}


def test_the_library_knows_neither_its_commands_nor_its_experiments():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("txl.") and not name.startswith(("txl.cli", "txl.__main__")):
            wrong = {t for t in targets if t.startswith(("txl.cli", "experiments"))}
            assert not wrong, f"{name} imports {sorted(wrong)}: only txl.cli (and tests) may"


MODULE_LINES = 400  # formatted by ruff at 120 columns: long calls take a line per argument
COMMAND_LINES = 200
FUNCTION_LINES = 60
# Functions allowed past FUNCTION_LINES, and why. A Triton kernel takes every pointer, stride, size and block size
# as its own launch argument, a line each as ruff formats them (30 or more); its body (its loads, products and stores,
# with jit helpers where the logic repeats) must still fit FUNCTION_LINES: test_a_long_function_has_a_short_body.
LONG_FUNCTIONS = {
    "txl.attention.fused_kernels._fwd": "a Triton kernel's launch arguments",
    "txl.attention.fused_kernels._bwd_dq": "a Triton kernel's launch arguments",
    "txl.attention.fused_kernels._bwd_dkdv": "a Triton kernel's launch arguments",
}


def test_rooms_stay_small():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in module_names().items()}
    big = {n: s for n, s in sizes.items() if n.startswith("txl") and s > MODULE_LINES}
    assert not big, f"modules over {MODULE_LINES} lines: {big}"
    commands = {n: s for n, s in sizes.items() if n.startswith("txl.cli.") and s > COMMAND_LINES}
    assert not commands, f"command modules over {COMMAND_LINES} lines: {commands}"


def function_lengths(path: Path, module: str) -> dict[str, int]:
    """Every function and method in a module, by dotted name, with its length in lines (def to last line)."""
    out = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{prefix}.{child.name}"] = child.end_lineno - child.lineno + 1
                visit(child, f"{prefix}.{child.name}")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8")), module)
    return out


def test_the_function_counter_counts_lines(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("class A:\n    def f(self):\n        x = 1\n        return x\n\n\ndef g():\n    pass\n")
    assert function_lengths(src, "m") == {"m.A.f": 3, "m.g": 2}


def test_no_function_is_longer_than_a_screen():
    lengths = {}
    for name, path in module_names().items():
        if name.startswith("txl"):
            lengths.update(function_lengths(path, name))
    long = {n: k for n, k in lengths.items() if k > FUNCTION_LINES and n not in LONG_FUNCTIONS}
    assert not long, (
        f"functions over {FUNCTION_LINES} lines (split them, or name them in LONG_FUNCTIONS with why): {long}"
    )
    stale = [n for n in LONG_FUNCTIONS if lengths.get(n, 0) <= FUNCTION_LINES]
    assert not stale, f"LONG_FUNCTIONS names functions that are short now (or gone): {stale}"


def test_a_long_function_has_a_short_body():
    """What LONG_FUNCTIONS allows is a long signature: from its first statement on, each fits FUNCTION_LINES."""
    bodies = {}
    for name in LONG_FUNCTIONS:
        module, function = name.rsplit(".", 1)
        tree = ast.parse(module_names()[module].read_text(encoding="utf-8"))
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
        bodies[name] = node.end_lineno - node.body[0].lineno + 1
    long = {n: k for n, k in bodies.items() if k > FUNCTION_LINES}
    assert not long, f"functions in LONG_FUNCTIONS whose bodies are over {FUNCTION_LINES} lines (split them): {long}"


def test_ranks_come_from_the_distributed_module():
    """Only txl.core.distributed reads torchrun's RANK and WORLD_SIZE from the environment."""
    for name, path in module_names().items():
        if name == "txl.core.distributed":
            continue
        text = path.read_text(encoding="utf-8")
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            assert f'environ.get("{var}"' not in text and f'environ["{var}"]' not in text, f"{name} reads {var}"


def test_a_job_pickled_before_the_move_unpickles_under_its_old_module_path():
    """A cluster job queued by txl 0.1 was pickled as txl.cluster.SweepJob (txl.cluster.Sweep inside it)."""
    import pickle

    from txl.study.cluster import Sweep, SweepJob

    job = SweepJob(Sweep("quickstart", "tiny", "results", seeds=[0, 1]), "long/seed0", None)
    data = pickle.dumps(job, protocol=0)  # protocol 0 writes module paths as text lines
    old = data.replace(b"txl.study.cluster", b"txl.cluster")
    assert old != data and b"txl.study" not in old
    back = pickle.loads(old)
    assert type(back) is SweepJob and back.sweep == job.sweep and back.key == "long/seed0"
    import txl.cluster
    import txl.results
    import txl.study.results

    assert txl.results is txl.study.results  # one module under both names: its state is not duplicated
    assert txl.study.results.__spec__.name == "txl.study.results"  # and it keeps its own spec: a reload reloads it


def test_tests_mirror_the_packages():
    """Each folder of tests/ is named for the package of txl it tests, but slow/ (the real Slurm) and slurm/ (its
    set-up); a test module at the top tests the whole code's shape."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders - {"slow", "slurm"} <= set(PACKAGE_ORDER), sorted(folders - {"slow", "slurm"} - set(PACKAGE_ORDER))
    assert [p.name for p in (ROOT / "tests").glob("test_*.py")] == ["test_architecture.py"]
