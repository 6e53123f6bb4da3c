"""The one rule for "the best trial of a grid cell".

Every user of the concept calls :func:`best_trials`: the ``--seeds`` phase (which trial's
configuration is re-run, :func:`study.run.seed_configs`), the Tune callback (which trial keeps
its checkpoint, :mod:`study.tune_callback`), the export (which model is published,
:mod:`study.export`) and the reports (which search trial stands for a cell without seed
re-runs, :func:`study.questions.common.representative_trials`). So on tied objectives they
all pick the same trial.

The rule, per cell, among the COMPLETED trials of the given phases whose objective is a number:

1. the search objective ``inter/<search.metric>`` (never a final test metric), best first
   (highest for ``mode: max``, lowest for ``mode: min``);
2. ties: the earlier ``finished_at`` (so the choice does not move as later trials are added;
   a row without ``finished_at`` counts as finished last);
3. still tied: the smaller ``trial_id`` (string order).

A cell whose completed trials have no objective value has no best trial (it is left out).
No Ray, no other study module: pandas and the study's vocabulary only.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from study.vocabulary import CELL, COMPLETED, FINISHED_AT, PHASE, PHASES, STATUS, TRIAL_ID, intermediate_metric

_RANK = "__selection_rank"
_FINISHED = "__selection_finished"
_ID = "__selection_id"


def ranked_trials(trials: pd.DataFrame, objective: str, mode: str,
                  phases: Iterable[str] = PHASES) -> pd.DataFrame:
    """The completed trials of ``phases`` with a numeric ``objective``, in the rule's order
    (cell, then best first); the frame's own columns only."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if trials.empty or objective not in trials.columns or STATUS not in trials.columns:
        return trials.iloc[0:0]
    done = trials[trials[STATUS] == COMPLETED]
    if PHASE in done.columns:
        done = done[done[PHASE].isin(list(phases))]
    values = pd.to_numeric(done[objective], errors="coerce")
    done = done[values.notna()]
    if done.empty:
        return done
    finished = (pd.to_numeric(done[FINISHED_AT], errors="coerce") if FINISHED_AT in done.columns
                else pd.Series(float("nan"), index=done.index))
    order = done.assign(**{
        _RANK: values[done.index] * (-1.0 if mode == "max" else 1.0),
        _FINISHED: finished.fillna(float("inf")),
        _ID: done[TRIAL_ID].astype(str),
    })
    order = order.sort_values([CELL, _RANK, _FINISHED, _ID], kind="stable")
    return order.drop(columns=[_RANK, _FINISHED, _ID])


def best_trials(trials: pd.DataFrame, objective: str, mode: str, phases: Iterable[str] = PHASES) -> pd.DataFrame:
    """Each cell's best trial by the rule (module doc), one row per cell, sorted by cell."""
    order = ranked_trials(trials, objective, mode, phases)
    return order.drop_duplicates(subset=[CELL], keep="first").reset_index(drop=True)


def best_trial_ids(trials: pd.DataFrame, objective: str, mode: str, phases: Iterable[str] = PHASES) -> dict[int, str]:
    """``{cell: trial_id}`` of :func:`best_trials`."""
    best = best_trials(trials, objective, mode, phases)
    return {int(cell): str(trial_id) for cell, trial_id in zip(best[CELL], best[TRIAL_ID])} if len(best) else {}


def spec_best_trials(spec, trials: pd.DataFrame, phases: Iterable[str] = PHASES) -> pd.DataFrame:
    """:func:`best_trials` with a study's objective (``inter/<search.metric>``) and mode."""
    return best_trials(trials, intermediate_metric(spec), spec.search.mode, phases)
