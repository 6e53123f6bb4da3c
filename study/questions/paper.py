"""The reference paper's tables (arXiv 2408.10536): X-X vs X-Y vs hybrid batches.

Table 1 is mAP in the monolingual (Mo), cross-lingual (Cr) and multilingual (Mul) LAReQA
settings per final dataset; table 2 is the multilingual rank distance (language bias, lower
is better). Our rows (the untrained starting model, then each batching cell as the mean of
its seed runs) come first; the paper's published rows (``report.published`` in the study
YAML, each with its source) follow, labelled as the paper's: they are other models trained
on other data, so only the direction of the differences between rows is comparable.
``paper_cells.csv`` has every number of our rows with its 95% interval over seeds, the change
against the untrained model, and the paper's value of the same sampling and metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from typing import Literal

from pydantic import Field

from hybridir.evaluation.vocabulary import CROSS_MAP, DATASET, MONO_MAP, MULTI_MAP, RANK_DISTANCE, SETTING
from study.question import Question, QuestionSettings, register
from study.questions.common import ReportContext, cell_axes, summarize, zero_shot_info, zero_shot_metric
from study.verdicts import VERDICT_FILE
from study.vocabulary import CELL, MEASURE

TABLE1_METRICS = {MONO_MAP: "Mo", CROSS_MAP: "Cr", MULTI_MAP: "Mul"}
TABLE2_METRICS = {RANK_DISTANCE: "rank distance"}
SAMPLING_ORDER = ("zero-shot", "X-X", "X-Y", "hybrid")


class PublishedRow(QuestionSettings):
    """One row of a paper's published table, printed beside ours and labelled as the paper's."""

    model: str = Field(..., description="the paper's model (e.g. XLM-R)")
    sampling: Literal["X-X", "X-Y", "hybrid"]
    dataset: str
    mono_map: float | None = Field(None, ge=0, le=1)
    cross_map: float | None = Field(None, ge=0, le=1)
    multi_map: float | None = Field(None, ge=0, le=1)
    rank_distance: float | None = Field(None, ge=0)
    source: str = Field(..., description="where the numbers are printed (paper, table)")


class PaperSettings(QuestionSettings):
    published: list[PublishedRow] = Field(
        default_factory=list, description="the reference paper's rows, shown beside ours"
    )


def sampling_label(alpha: float) -> str:
    """The paper's names: alpha 1 = every batch X-X, alpha 0 = every batch X-Y."""
    if alpha >= 1.0:
        return "X-X"
    if alpha <= 0.0:
        return "X-Y"
    return "hybrid"


def _ours(ctx: ReportContext) -> tuple[list[dict], str]:
    """(one record per cell and metric: mean, seed CI, n runs; our model's label)."""
    models = sorted(set(ctx.completed.get("model/display_name", pd.Series(dtype=str)).dropna()))
    columns = {(dataset, metric): f"final/{dataset}/{metric}"
               for dataset in ctx.final_datasets() for metric in (*TABLE1_METRICS, *TABLE2_METRICS)}
    records = []
    for _, row in summarize(ctx, list(columns.values())).iterrows():
        config = ctx.spec.train_config(cell_axes(ctx, int(row[CELL])))
        alpha = config.batching.effective_alpha
        for (dataset, metric), column in columns.items():
            records.append({"training": config.data.source, "sampling": sampling_label(alpha), "alpha": alpha,
                            DATASET: dataset, "metric": metric,
                            "mean": row[column], "ci_low": row[f"{column}_ci_low"],
                            "ci_high": row[f"{column}_ci_high"], "n_runs": int(row["n"])})
    return records, (models[0] if len(models) == 1 else ", ".join(models) or ctx.spec.base_config.model.name)


def _published(ctx: ReportContext) -> pd.DataFrame:
    rows = [row.model_dump() for row in ctx.settings.published]
    return pd.DataFrame(rows)


def _wide(records: pd.DataFrame, metrics: dict[str, str], datasets: list[str]) -> pd.DataFrame:
    """(source, model, sampling, runs) x one column per (dataset, metric), in the paper's order."""
    columns = [f"{dataset} {label}" for dataset in datasets for label in metrics.values()]
    if records.empty:
        return pd.DataFrame(columns=["source", "model", "sampling", "runs", *columns])
    frame = records[records["metric"].isin(metrics)].copy()
    frame["column"] = frame[DATASET] + " " + frame["metric"].map(metrics)
    wide = frame.pivot_table(index=["source", "model", "sampling", "runs"], columns="column", values="value",
                             aggfunc="first").reset_index()
    wide.columns.name = None
    for column in columns:
        if column not in wide:
            wide[column] = np.nan
    order = {name: i for i, name in enumerate(SAMPLING_ORDER)}
    wide["_source"] = (~wide["source"].str.startswith("ours")).astype(int)  # ours first, then the paper's models
    wide["_sampling"] = wide["sampling"].map(order)
    wide = wide.sort_values(["_source", "source", "model", "_sampling"]).drop(columns=["_source", "_sampling"])
    return wide[["source", "model", "sampling", "runs", *columns]].reset_index(drop=True)


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    datasets = ctx.final_datasets()
    ours, model = _ours(ctx)
    zero = zero_shot_info(ctx)
    published = _published(ctx)
    long_rows = []
    for record in ours:
        zero_value = zero_shot_metric(zero, record[DATASET], record["metric"]) if zero else np.nan
        paper = {}
        if not published.empty and record["metric"] in published:
            same = published[(published["sampling"] == record["sampling"]) & (published[DATASET] == record[DATASET])]
            paper = {f"paper/{row['model']}": row[record["metric"]] for _, row in same.iterrows()}
        long_rows.append({**record, "zero_shot": zero_value, "delta_vs_zero_shot": record["mean"] - zero_value, **paper})
    cells = pd.DataFrame(long_rows)

    # One block of rows per training source when the study sweeps data.source (e.g. XQuAD QA
    # pairs and NTREX sentence pairs): "ours (xquad)", "ours (ntrex)".
    several = len({r["training"] for r in ours}) > 1
    layout = [{"source": f"ours ({r['training']})" if several else "ours", "model": model,
               "sampling": r["sampling"], "runs": r["n_runs"],
               DATASET: r[DATASET], "metric": r["metric"], "value": r["mean"]} for r in ours]
    if zero:
        for dataset in datasets:
            for metric in (*TABLE1_METRICS, *TABLE2_METRICS):
                layout.append({"source": "ours", "model": model, "sampling": "zero-shot", "runs": 1,
                               DATASET: dataset, "metric": metric, "value": zero_shot_metric(zero, dataset, metric)})
    for _, row in published.iterrows():
        if row[DATASET] not in datasets:
            continue
        for metric in (*TABLE1_METRICS, *TABLE2_METRICS):
            value = row.get(metric)
            if value is not None and np.isfinite(value):
                layout.append({"source": f"paper ({row['source']})", "model": row["model"], "sampling": row["sampling"],
                               "runs": "published", DATASET: row[DATASET], "metric": metric, "value": float(value)})
    layout = pd.DataFrame(layout)
    if not layout.empty:
        layout["runs"] = layout["runs"].astype(str)
    return {
        "paper_table1_map": _wide(layout, TABLE1_METRICS, datasets),
        "paper_table2_rank_distance": _wide(layout, TABLE2_METRICS, datasets),
        "paper_cells": cells,
    }


SOURCE_AXIS = "data.source"


def source_comparison(spec, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Does the training source change the verdicts? One row per claim tested once per
    training source: claims whose two compared cells share one ``data.source`` value and are
    otherwise the same claim (dataset, setting, measure, direction, margin, languages involved,
    the other axes of the comparison) are paired, and each source's verdict, estimate and CI
    sit side by side. Empty when the study does not sweep ``data.source``."""
    if SOURCE_AXIS not in spec.axes or verdicts.empty:
        return pd.DataFrame()
    by_id = verdicts.set_index("claim")
    groups: dict[tuple, dict[str, str]] = {}
    for claim in spec.claims:
        compare = claim.compare
        if compare is None or claim.id not in by_id.index:
            continue
        source_a, source_b = compare.a.get(SOURCE_AXIS), compare.b.get(SOURCE_AXIS)
        if source_a is None or source_a != source_b:
            continue
        side_a, side_b = (", ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(side.items()) if k != SOURCE_AXIS)
                          for side in (compare.a, compare.b))
        key = (claim.dataset, claim.setting, claim.measure, claim.direction, claim.margin,
               tuple(claim.involving or ()), side_a, side_b)
        groups.setdefault(key, {})[str(source_a)] = claim.id
    sources = [str(s) for s in spec.axes[SOURCE_AXIS]]
    rows = []
    for key, ids in groups.items():
        if len(ids) < 2:
            continue
        dataset, setting, measure, direction, margin, involving, a, b = key
        row = {DATASET: dataset, SETTING: setting, MEASURE: measure,
               "comparison": f"({a}) vs ({b})" + (f", pairs involving {'/'.join(involving)}" if involving else ""),
               "direction": direction + (f" (margin {margin:g})" if margin is not None else "")}
        verdict_set = set()
        for source in sources:
            claim_id = ids.get(source)
            if claim_id is None:
                row[f"{source}: verdict"] = row[f"{source}: estimate [95% CI]"] = "-"
                continue
            v = by_id.loc[claim_id]
            row[f"{source}: verdict"] = v["verdict"]
            row[f"{source}: estimate [95% CI]"] = (f"{v['estimate']:+.4f} {v['ci']}" if pd.notna(v["estimate"]) else "-")
            verdict_set.add(v["verdict"])
        row["same verdict"] = "yes" if len(verdict_set) == 1 else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def check(spec) -> None:
    """The Mo / Cr / Mul tables need LAReQA-style final sets."""
    from hybridir.data.registry import eval_set_kind
    from study.spec import StudyConfigError

    for index, final in enumerate(spec.evaluation.final):
        if eval_set_kind(final.dataset) != "lareqa":
            raise StudyConfigError(
                f"evaluation.final[{index}]: {final.dataset!r} is scored as {eval_set_kind(final.dataset)}; the "
                "paper report's Mo / Cr / Mul tables need LAReQA-style sets (xquad-r, mlqa-r)"
            )


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The paper's tables 1 and 2 beside ours (rows ``source = ours``: the zero-shot model and
    each sampling's seed mean; the others copied from the YAML's published rows)."""
    from study.report import _table

    lines = []
    for name, title in (("paper_table1_map", "Table 1 (mAP): ours beside the paper's published rows"),
                        ("paper_table2_rank_distance", "Table 2 (rank distance): ours beside the paper's")):
        table = tables.get(name)
        if table is not None and len(table):
            lines += [f"{title}:", "", _table(table), ""]
    verdict_path = ctx.out_dir / VERDICT_FILE
    if verdict_path.is_file():
        comparison = source_comparison(ctx.spec, pd.read_csv(verdict_path))
        if not comparison.empty:
            changed = int((comparison["same verdict"] == "no").sum())
            lines += ["Does the training source change the verdicts? Each claim tested once per training "
                      f"source ({', '.join(str(s) for s in ctx.spec.axes[SOURCE_AXIS])}), side by side: "
                      f"{changed} of {len(comparison)} verdicts differ between the sources.", "",
                      _table(comparison), ""]
    return lines


register(Question(
    name="paper", summary="the reference paper's tables 1-2 (X-X vs X-Y vs hybrid), ours beside its published rows",
    build=build, settings=PaperSettings, check=check, findings=findings,
))
