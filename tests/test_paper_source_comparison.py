"""The paper report's side-by-side of the verdicts per training source (study.questions.paper)."""

import pandas as pd
import pytest

from study.questions.paper import source_comparison
from study.spec import load_study


@pytest.fixture(scope="module")
def spec():
    return load_study("paper", profile="local")


def _verdicts(spec, verdict_of):
    return pd.DataFrame([{"claim": c.id, "verdict": verdict_of(c.id), "estimate": 0.01 if c.id.startswith("qa-") else -0.02,
                          "ci": "[0.0010, 0.0190]"} for c in spec.claims])


def test_every_claim_pairs_with_its_other_source(spec):
    table = source_comparison(spec, _verdicts(spec, lambda cid: "supported"))
    assert len(table) * 2 == len(spec.claims) == 32  # 16 claims, each tested once per source
    assert list(table.columns[-5:]) == ["xquad: verdict", "xquad: estimate [95% CI]", "ntrex: verdict",
                                        "ntrex: estimate [95% CI]", "same verdict"]
    assert set(table["same verdict"]) == {"yes"}
    unseen = table[table["comparison"].str.contains("involving el/vi")]
    assert len(unseen) == 2 and set(unseen["dataset"]) == {"xquad-r"}
    equivalence = table[table["direction"].str.startswith("equivalent")]
    assert len(equivalence) == 2 and equivalence["direction"].str.contains("margin 0.01").all()


def test_a_changed_verdict_is_flagged_on_its_row_only(spec):
    table = source_comparison(spec, _verdicts(
        spec, lambda cid: "contradicted" if cid == "ntrex-mlqa-hybrid-vs-xy-cross" else "supported"))
    changed = table[table["same verdict"] == "no"]
    assert len(changed) == 1
    row = changed.iloc[0]
    assert (row["dataset"], row["setting"], row["ntrex: verdict"], row["xquad: verdict"]) == \
        ("mlqa-r", "cross", "contradicted", "supported")
    assert row["comparison"] == "(alpha=0.5) vs (alpha=0.0)"
    assert row["xquad: estimate [95% CI]"].startswith("+0.0100")


def test_without_a_source_axis_there_is_nothing_to_pair():
    spec = load_study("default")
    assert source_comparison(spec, pd.DataFrame([{"claim": c.id, "verdict": "supported", "estimate": 0.0, "ci": ""}
                                                 for c in spec.claims])).empty
