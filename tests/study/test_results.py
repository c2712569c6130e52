"""txl.study.results: result rows are read and checked once, and a malformed line is named by its line and field."""

from __future__ import annotations

import json

import pytest
from conftest import result_rows

from txl.study.results import ResultRow, RowError, append_result, read_results


def _good() -> dict:
    return result_rows({"variant": "a", "seed": 0, "kind": "train", "metrics": {"loss": 1.0, "split": "valid"}})[
        0
    ].to_dict()


def test_a_row_reads_back_as_it_was_written(tmp_path):
    path = tmp_path / "results.jsonl"
    row = ResultRow.from_dict(_good())
    assert append_result(path, row) and not append_result(path, row)  # the same (variant, seed, hash) once
    (back,) = read_results(path)
    assert back == row and back.split == "valid" and back.to_dict() == _good()
    assert list(json.loads(path.read_text())) == list(_good())  # the keys in the table's own order
    assert list(_good())[:3] == ["experiment", "scale", "variant"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seed", "0", "has seed = '0', not a whole number"),
        ("seed", True, "not a whole number"),
        ("kind", "other", "not train, eval, adapt"),
        ("plan", {"memory": 4}, "not an object of plans in the plan language"),
        ("budget", {"cached_positions": "8"}, "not an object of numbers"),
        ("metrics", {"loss": "low"}, "has metrics"),
        ("metrics", [1.0], "has metrics"),
        ("blocks", [1, 2], "has blocks"),
        ("blocks", {"loss": "x", "tokens": [1]}, "equally long lists of numbers"),
        ("blocks", {"loss": [[1]], "tokens": [1]}, "equally long lists of numbers"),
        ("blocks", {"loss": [1.0], "tokens": "x"}, "equally long lists of numbers"),
        ("blocks", {"loss": [1.0, 2.0], "tokens": [1]}, "equally long lists of numbers"),
        ("metrics", {"loss": 1.0, "split": 5}, "whose split is train, valid, test, whole"),
        ("metrics", {"loss": 1.0, "split": "x"}, "whose split is"),
        ("metrics", {"loss": 1.0, "split": None}, "whose split is"),
        ("loss_by_position", ["a"], "a list of numbers"),
        ("of", 3, "not a variant name or null"),
    ],
)
def test_a_field_of_the_wrong_type_is_named(field, value, message):
    with pytest.raises(RowError, match=message.replace("[", r"\[")):
        ResultRow.from_dict({**_good(), field: value})


def test_a_results_file_names_each_malformed_line_and_keeps_the_rest(tmp_path, messages):
    path = tmp_path / "results.jsonl"
    lines = [_good(), {**_good(), "seed": "zero"}, {**_good(), "variant": "b"}, {**_good(), "budget": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = read_results(path)
    said = messages()
    assert [r.variant for r in rows] == ["a", "b"]
    assert len(said) == 1 and "2 damaged lines left out" in said[0]
    assert "line 2 has seed = 'zero', not a whole number" in said[0] and "line 4 has budget" in said[0]
    messages.clear()
    assert len(read_results(path, warn=False)) == 2 and messages() == []
