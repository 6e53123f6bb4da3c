"""bench/variance_components.py --add: a run's datasets join the planner's variance table."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "variance_components.py"
spec = importlib.util.spec_from_file_location("variance_components", SCRIPT)
variance_components = importlib.util.module_from_spec(spec)
spec.loader.exec_module(variance_components)


def _entry(dataset, setting, measure, sd):
    return {"dataset": dataset, "setting": setting, "measure": measure, "seed_sd": sd}


def _table(run, *entries):
    return {"meta": {"what": "w", "run": run, "study": run.split("/")[-1]}, "components": list(entries)}


def test_new_datasets_are_added_and_shared_ones_replaced_with_their_source_named():
    old = _table("runs/aa", _entry("xquad-r", "cross", "ap", 0.1), _entry("xquad-r", "mono", "ap", 0.2))
    new = _table("runs/paper", _entry("mlqa-r", "cross", "ap", 0.3), _entry("xquad-r", "mono", "ap", 0.4))
    merged = variance_components.merge_tables(old, new)
    by_key = {(e["dataset"], e["setting"], e["measure"]): e["seed_sd"] for e in merged["components"]}
    assert by_key == {("xquad-r", "cross", "ap"): 0.1, ("xquad-r", "mono", "ap"): 0.4, ("mlqa-r", "cross", "ap"): 0.3}
    assert [(s["run"], s["datasets"]) for s in merged["meta"]["sources"]] == \
        [("runs/aa", ["xquad-r"]), ("runs/paper", ["mlqa-r", "xquad-r"])]
    assert merged["meta"]["run"] == "runs/aa, runs/paper"


def test_a_source_whose_every_entry_is_replaced_is_dropped_and_merging_twice_is_stable():
    old = _table("runs/aa", _entry("xquad-r", "cross", "ap", 0.1))
    new = _table("runs/b", _entry("xquad-r", "cross", "ap", 0.2))
    merged = variance_components.merge_tables(old, new)
    assert [s["run"] for s in merged["meta"]["sources"]] == ["runs/b"]
    again = variance_components.merge_tables(merged, _table("runs/c", _entry("afriqa", "cross", "ap", 0.5)))
    assert [(s["run"], s["datasets"]) for s in again["meta"]["sources"]] == [("runs/b", ["xquad-r"]), ("runs/c", ["afriqa"])]
    assert len(again["components"]) == 2
