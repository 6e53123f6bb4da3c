"""study.questions.common.add_zero_shot: the untrained model's rows beside the trained ones."""
import numpy as np
import pandas as pd
import pytest

from study.questions.common import add_zero_shot


def test_trained_rows_keep_their_keys_in_front_and_zero_rows_get_no_invented_deltas():
    # two metrics in one wide table, as the ratio report writes it: each row fills its metric's columns only
    table = pd.DataFrame([
        {"alpha": 0.0, "dataset": "afriqa", "metric": "cross_map", "mean": 0.50, "cross_map/ha": 0.40},
        {"alpha": 0.0, "dataset": "flores", "metric": "bitext_accuracy", "mean": 0.93, "bitext_accuracy/am": 0.90},
        {"alpha": 1.0, "dataset": "afriqa", "metric": "cross_map", "mean": 0.48, "cross_map/ha": 0.41},
    ])
    zero = [{"dataset": "afriqa", "metric": "cross_map", "mean": 0.51, "cross_map/ha": 0.39},
            {"dataset": "flores", "metric": "bitext_accuracy", "mean": 0.92, "bitext_accuracy/am": 0.88}]
    merged = add_zero_shot(table, zero, ["mean", "cross_map/ha", "bitext_accuracy/am"], ["dataset", "metric"])

    assert list(merged.columns[:4]) == ["run", "alpha", "dataset", "metric"]
    assert merged["run"].tolist() == ["zero-shot", "zero-shot", "trained", "trained", "trained"]
    assert merged.loc[merged["run"] == "zero-shot", "alpha"].isna().all()
    trained = merged[merged["run"] == "trained"].set_index(["alpha", "dataset"])
    assert trained.loc[(1.0, "afriqa"), "mean_delta_vs_zero_shot"] == pytest.approx(0.48 - 0.51)
    assert trained.loc[(0.0, "flores"), "bitext_accuracy/am_delta_vs_zero_shot"] == pytest.approx(0.90 - 0.88)
    zero_rows = merged[merged["run"] == "zero-shot"].set_index("dataset")
    assert zero_rows.loc["afriqa", "mean_delta_vs_zero_shot"] == 0.0
    # the AfriQA row has no bitext value: its change is empty, not 0
    assert np.isnan(zero_rows.loc["afriqa", "bitext_accuracy/am_delta_vs_zero_shot"])
    assert np.isnan(zero_rows.loc["flores", "cross_map/ha_delta_vs_zero_shot"])
    assert zero_rows.loc["flores", "bitext_accuracy/am_delta_vs_zero_shot"] == 0.0


def test_without_zero_shot_rows_the_table_is_unchanged():
    table = pd.DataFrame([{"dataset": "xquad-r", "mean": 0.5}])
    assert add_zero_shot(table, [], ["mean"], ["dataset"]) is table
