"""Bad input gets one line and exit code 2: every numeric field of every config section, and the flags beside them."""

import dataclasses
import typing

import pytest

from txl.cli import main
from txl.config import RunConfig
from txl.config.domains import HUGE
from txl.config.sections import DOMAINS

# where each section sits in a run config
SECTIONS = {
    "model": "ModelConfig", "model.layers.0": "LayerConfig", "model.las": "LaSConfig", "model.t5": "T5Config",
    "model.fastrpb": "FastRPBConfig", "model.sikf": "SIKFConfig", "data": "DataConfig",
    "data.synthetic": "SyntheticConfig", "train": "TrainConfig", "eval": "EvalConfig",
}


def _is_float(tp) -> bool:
    args = typing.get_args(tp) or (tp,)
    return float in args or any(typing.get_args(a) == (float,) for a in args)


def bad_values(domain, tp) -> list[str]:
    """Values just outside the domain, non-finite ones for floats, and a size no machine holds."""
    step = 0.5 if _is_float(tp) else 1
    out = []
    if domain.lo is not None:
        out.append(domain.lo if domain.lo_open else domain.lo - step)
    if domain.hi is not None:
        out.append(domain.hi if domain.hi_open else domain.hi + step)
    texts = [str(v) for v in out]
    if _is_float(tp):
        texts += ["NaN", "Infinity", "-Infinity"]
    elif domain.hi is None:
        texts.append(str(10 * HUGE))
    return texts


def cases():
    classes = {cls.__name__: cls for cls in DOMAINS}
    for path, name in SECTIONS.items():
        cls = classes[name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in DOMAINS[cls]:
                continue
            listed = typing.get_origin(hints[f.name]) is list or any(typing.get_origin(a) is list for a in typing.get_args(hints[f.name]))
            for text in bad_values(DOMAINS[cls][f.name], hints[f.name]):
                value = f"[{text}]" if listed else text
                if f.name == "betas":
                    value = f"[0.9,{text}]"
                yield pytest.param(f"{path}.{f.name}", value, id=f"{path}.{f.name}={value}")


CASES = list(cases())


def test_every_field_with_a_domain_is_covered():
    covered = {c.values[0] for c in CASES}
    assert len(covered) == sum(len(d) for d in DOMAINS.values())
    assert {"model.n_head", "train.lr", "train.clip", "model.layers.0.mem_len", "eval.max_segments"} <= covered


@pytest.mark.parametrize("key, value", CASES)
def test_out_of_domain_values_are_one_line_errors(key, value, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--set", f"{key}={value}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{key}={value} was accepted"
    assert "\n" not in err and err.startswith("txl train: error:") and "Traceback" not in err
    assert key.rsplit(".", 1)[-1].split(".")[0] in err or key.split(".")[0] in err, err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "tiny", "--n-head", "0"], "model.n_head must be >= 1"),
        (["train", "--preset", "tiny", "--lr", "nan"], "train.lr must be a finite number"),
        (["train", "--preset", "tiny", "--lr", "inf"], "train.lr must be a finite number"),
        (["train", "--preset", "tiny", "--set", "train.clip=NaN"], "train.clip must be a finite number"),
        (["train", "--preset", "tiny", "--device", "bogus"], "train.device must be auto, cpu, cuda or cuda:N"),
        (["train", "--preset", "tiny", "--d-model", "1000000000000000"], "beyond any machine"),
        (["train", "--preset", "tiny", "--steps", "0"], "train.steps must be >= 1"),
        (["run", "quickstart", "--scale", "tiny", "--steps", "0"], "train.steps must be >= 1"),
        (["budget", "--layers", "4", "--memory", ""], "has an empty item"),
        (["generate", "nowhere", "--top-k", "-3"], "--top-k must be >= 0"),
        (["generate", "nowhere", "--temperature", "nan"], "--temperature must be a finite number > 0"),
        (["eval", "nowhere", "--tgt-len", "0"], "--tgt-len must be >= 1"),
        (["eval", "nowhere", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["eval", "nowhere", "--max-segments", "0"], "--max-segments must be >= 1"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_huge_batch_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "tiny", "--batch-size", "1000000", "--run-dir", "run", "--set", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()  # the token cache's progress lines, then the error
    last = err.splitlines()[-1]
    assert last.startswith("txl train: error:") and "cannot make 1000000 streams" in last and "Traceback" not in err


def test_the_run_config_default_passes():
    assert RunConfig().validate()
