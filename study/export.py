"""Export a study's trained models as Sentence Transformers directories with model cards.

    python study/export.py RUN_DIR                       # every cell's best trial -> RUN_DIR/models/
    python study/export.py RUN_DIR --cell 0 --cell 2     # some cells (also: --cell 0 2)
    python study/export.py RUN_DIR --trial 3f2a1_00004   # one trial, whatever its rank
    python study/export.py RUN_DIR --cell 1 --to exported --push-to-hub me/hybrid-e5-small

Which trial: a cell's best COMPLETED trial over every phase, by the search objective
(``inter/<search.metric>``, ``search.mode``), ties to the earlier-finished trial: the study's one
selection rule (:mod:`study.selection`), which also picks the ``--seeds`` re-run source, the kept
checkpoint and the reported trial; never a final test set.

Where its model is: the trial's Ray Train run ``<storage>/train-<phase>-<trial id>/``, newest
``checkpoint_*/model/`` (a ``BiEncoder.save`` directory). ``<storage>`` is
``resources.storage_path`` of the frozen study, or ``RUN_DIR/ray``; ``--storage`` overrides both
(e.g. after moving the study). A relative storage path is taken from the current directory,
as ``study/run.py`` takes it. Local or URI (``s3://``, ``gs://``, ``file://``), the storage is read
through :mod:`study.storage` (``pyarrow.fs``): a URI's checkpoint model is copied to a temporary
directory first. ``RUN_DIR`` and ``--to`` are local directories: a cloud URI there is an error
naming the value, never a local folder named ``s3:``. The
driver deletes finished trials' checkpoints except each cell's best unless the study ran with
``--set resources.keep_checkpoints=true``; a trial without one fails with that hint.

Layout (``--to DIR`` replaces ``RUN_DIR/models``)::

    RUN_DIR/models/
      cell-<k>/          the best trial of cell k: a Sentence Transformers directory
                         (hybridir.export: weights, tokenizer, modules, prompts, README.md card),
                         which BiEncoder.load reads as well
      trial-<id>/        a model exported with --trial
      index.json         one entry per exported model: directory, cell, axes, trial, phase, seed,
                         status, objective (metric, mode, value), model name, export time
      README.md          the same as a table

Re-exporting replaces a model's directory whole and updates its index entry; entries of
other models stay. Every check (study file, cells, completed trials, checkpoints, Hub id and
offline mode) runs before the first model is loaded. No Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from hybridir.checkpoint import MODEL_SUBDIR
from hybridir.config import TrainConfig
from hybridir.export import (
    ExportError,
    ModelCardInfo,
    base_model_info,
    check_can_push,
    export_sentence_transformers,
    push_to_hub,
)
from hybridir.model import SETTINGS_FILE, BiEncoder
from study.results import ResultStore
from study.selection import best_trials
from study.storage import is_file, local_copy, local_directory, subdirectories
from study.storage import join as storage_join
from study.storage import storage_location as study_storage
from study.spec import StudyConfigError, StudySpec, load_study
from study.vocabulary import (
    AXIS_PREFIX,
    CELL,
    CHECKPOINT_PREFIX,
    COMPLETED,
    CONFIG_AXES,
    CONFIG_TUNED,
    FINAL_PREFIX,
    MODEL_DISPLAY_NAME,
    MODEL_TRAINING,
    PHASE,
    SEED,
    SPEC_FILE,
    STATUS,
    STEP,
    TRIAL_ID,
    TUNED_PREFIX,
    intermediate_metric,
    plain_value,
    prefixed_columns,
    train_run_name,
)

# Named, not __name__: the same logger whether imported or run as `python study/export.py`.
log = logging.getLogger("study.export")

MODELS_DIR = "models"
INDEX_FILE = "index.json"
INDEX_README = "README.md"
KEEP_CHECKPOINTS_HINT = "--set resources.keep_checkpoints=true"
# Summary keys that count or time things rather than measure retrieval: left off the card.
_BOOKKEEPING_PREFIXES = ("n_",)
_BOOKKEEPING_SUFFIXES = ("_s",)


class StudyExportError(ValueError):
    """The study directory does not hold what was asked to export."""


@dataclass(frozen=True)
class SelectedTrial:
    """One trial to export: its results row, why it was chosen, where it goes."""

    row: dict
    directory_name: str  # cell-<k> or trial-<id>
    selection: str
    checkpoint: str  # the trial's checkpoint model directory (a local path or a storage URI)

    @property
    def trial_id(self) -> str:
        return str(self.row[TRIAL_ID])


# ---------------------------------------------------------------------------- reading the study
def read_study(run_dir: str | Path) -> StudySpec:
    """The frozen study of ``run_dir``; StudyExportError if it is not a study directory."""
    try:
        run_dir = local_directory(run_dir, "RUN_DIR")
    except StudyConfigError as exc:
        raise StudyExportError(str(exc)) from None
    path = run_dir / SPEC_FILE
    if not run_dir.is_dir():
        raise StudyExportError(f"{run_dir} is not a study directory: it does not exist")
    if not path.is_file():
        raise StudyExportError(f"{run_dir} is not a study directory: it has no {SPEC_FILE} "
                               "(study/run.py writes one into every study directory it creates)")
    try:
        return load_study(path)
    except StudyConfigError as exc:
        raise StudyExportError(f"{path}: {exc}") from None


def finished_trials(run_dir: Path, spec: StudySpec) -> pd.DataFrame:
    """``results/trials`` of the study; StudyExportError when no trial has finished yet."""
    trials = ResultStore(run_dir).trials()
    if trials.empty:
        raise StudyExportError(f"study {spec.name!r} in {run_dir} has no finished trial yet (results/trials.jsonl)")
    return trials


def storage_location(spec: StudySpec, run_dir: Path, storage: str | None = None) -> str:
    """Where the study's Ray Train runs are: ``storage`` (a moved study), else where the driver
    put them (:func:`study.storage.storage_location`)."""
    return study_storage(storage or spec.resources.storage_path, run_dir)


def _plain(value: Any) -> Any:
    """A row's value as plain Python; None for a cell pandas filled with NaN."""
    value = plain_value(value)
    return None if isinstance(value, float) and math.isnan(value) else value


def _config_values(row: dict, prefix: str) -> dict[str, Any]:
    # Rows of other trials may add columns this trial lacks (NaN in its row): not its values.
    return {path: value for path, value in prefixed_columns(row, prefix).items() if _plain(value) is not None}


def trial_seed(row: dict) -> int | None:
    """The seed a row's trial ran with (None: the study's base seed, as in search trials)."""
    seed = _plain(row.get(SEED))
    return None if seed is None else int(seed)


def trial_train_config(spec: StudySpec, row: dict) -> TrainConfig:
    """The TrainConfig a results row's trial trained with: its ``axis/`` and ``tuned/``
    columns and seed, through the searchers' rule (:meth:`StudySpec.trial_train_config`)."""
    return spec.trial_train_config({CONFIG_AXES: _config_values(row, AXIS_PREFIX),
                                    CONFIG_TUNED: _config_values(row, TUNED_PREFIX), SEED: trial_seed(row)})


# ---------------------------------------------------------------------------- checkpoints
def _missing_checkpoint(trial_id: str, phase: str, folder: str, what: str) -> StudyExportError:
    return StudyExportError(
        f"trial {trial_id} ({phase}) has no model to export: {what} in {folder}. The study driver "
        f"deletes finished trials' checkpoints except each cell's best; run the study with "
        f"{KEEP_CHECKPOINTS_HINT} to keep them all."
    )


def locate_checkpoint(storage: str, phase: str, trial_id: str) -> str:
    """The newest ``checkpoint_*/model`` of a trial's Train run (a path, or a URI for a
    URI storage; read through :mod:`study.storage`). StudyExportError naming the trial and
    folder if there is none."""
    run = storage_join(storage, train_run_name(phase, trial_id))
    checkpoints = subdirectories(run, CHECKPOINT_PREFIX)
    if not checkpoints:
        raise _missing_checkpoint(trial_id, phase, run, f"no {CHECKPOINT_PREFIX}* folder")
    model_dir = storage_join(run, checkpoints[-1], MODEL_SUBDIR)
    if not is_file(storage_join(model_dir, SETTINGS_FILE)):
        raise _missing_checkpoint(trial_id, phase, run, f"the newest checkpoint {checkpoints[-1]} has no "
                                                       f"{MODEL_SUBDIR}/{SETTINGS_FILE}")
    return model_dir


# ---------------------------------------------------------------------------- choosing trials
def _describe_axes(axes: dict) -> str:
    return ", ".join(f"{path}={value!r}" for path, value in axes.items()) or "no axes"


def _objective_text(row: dict, metric: str, mode: str) -> str:
    value = _plain(row.get(metric))
    return f"{metric} = {value:.4f} ({mode})" if value is not None else f"no {metric}"


def select_cells(spec: StudySpec, trials: pd.DataFrame, storage: str,
                 cells: Sequence[int] | None) -> list[SelectedTrial]:
    """Each asked cell's best completed trial (every cell with one when ``cells`` is None),
    with its checkpoint located. Errors before any model is loaded."""
    grid = spec.cells()
    if cells is not None:
        unknown = sorted({cell for cell in cells if not 0 <= cell < len(grid)})
        if unknown:
            listing = "; ".join(f"{index}: {_describe_axes(axes)}" for index, axes in enumerate(grid))
            raise StudyExportError(f"study {spec.name!r} has no cell {unknown}; its cells are {listing}")
    metric, mode = intermediate_metric(spec), spec.search.mode
    best = best_trials(trials, metric, mode)
    if best.empty:
        counts = trials[STATUS].value_counts().to_dict() if STATUS in trials else {}
        raise StudyExportError(
            f"study {spec.name!r} has no completed trial with {metric} to export "
            f"({len(trials)} finished: {counts or 'no status'})"
        )
    by_cell = {int(row[CELL]): row for row in best.to_dict("records")}
    wanted = sorted(set(cells)) if cells is not None else sorted(by_cell)
    missing = [cell for cell in wanted if cell not in by_cell]
    if missing and cells is not None:
        raise StudyExportError(f"cell(s) {missing} of study {spec.name!r} have no completed trial with {metric}")
    for cell in sorted(set(range(len(grid))) - set(by_cell)):
        log.warning("cell %d (%s) has no completed trial: nothing to export for it", cell, _describe_axes(grid[cell]))

    selected = []
    for cell in (cell for cell in wanted if cell in by_cell):
        row = by_cell[cell]
        in_cell = trials[(trials[CELL] == cell) & (trials[STATUS] == COMPLETED)]
        selection = (f"best of the {len(in_cell)} completed trial(s) of cell {cell} by "
                     f"{_objective_text(row, metric, mode)} on the intermediate evaluation")
        checkpoint = locate_checkpoint(storage, str(row[PHASE]), str(row[TRIAL_ID]))
        selected.append(SelectedTrial(row, f"cell-{cell}", selection, checkpoint))
    return selected


def select_trial(spec: StudySpec, trials: pd.DataFrame, storage: str, trial_id: str) -> SelectedTrial:
    """One trial by id, with its checkpoint located."""
    rows = trials[trials[TRIAL_ID].astype(str) == trial_id]
    if rows.empty:
        known = ", ".join(map(str, trials[TRIAL_ID].head(20)))
        raise StudyExportError(f"study {spec.name!r} has no finished trial {trial_id!r}; finished: {known}")
    row = rows.iloc[-1].to_dict()
    selection = (f"exported by trial id (status {row.get(STATUS)}; "
                 f"{_objective_text(row, intermediate_metric(spec), spec.search.mode)})")
    checkpoint = locate_checkpoint(storage, str(row[PHASE]), trial_id)
    return SelectedTrial(row, f"trial-{trial_id}", selection, checkpoint)


# ---------------------------------------------------------------------------- the card
def final_metrics(row: dict) -> dict[str, dict[str, float]]:
    """``{dataset: {metric: value}}`` of a row's ``final/<dataset>/<metric>`` columns, retrieval
    measures only (counts ``n_*`` and timings ``*_s`` are left out)."""
    metrics: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if not key.startswith(FINAL_PREFIX):
            continue
        dataset, _, metric = key[len(FINAL_PREFIX):].partition("/")
        value = _plain(value)  # None for NaN: a metric this trial did not report
        if not metric or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if metric.startswith(_BOOKKEEPING_PREFIXES) or metric.endswith(_BOOKKEEPING_SUFFIXES):
            continue
        metrics.setdefault(dataset, {})[metric] = float(value)
    return metrics


def training_languages(config: TrainConfig) -> list[str]:
    """The languages a config trains on (the source's documented order), [] if the source
    does not declare them."""
    from hybridir.data.registry import train_source_languages

    if config.data.languages is not None:
        return list(config.data.languages)
    available = train_source_languages(config.data.source) or []
    return available[: config.data.num_languages] if config.data.num_languages else list(available)


def evaluation_languages(spec: StudySpec) -> dict[str, list[str]]:
    """Each final evaluation set's languages (the study's restriction, or the set's own)."""
    from hybridir.data.registry import eval_set_languages

    return {
        final.dataset: list(final.languages or eval_set_languages(final.dataset) or [])
        for final in spec.evaluation.final
    }


def hyperparameters(config: TrainConfig, axes: dict, tuned: dict) -> dict[str, Any]:
    """The main training settings, scaling axes and tuned values marked as such."""
    data, batching, model, optim = config.data, config.batching, config.model, config.optim
    values: dict[str, Any] = {
        "data.source": data.source,
        "data.num_languages": data.num_languages if data.languages is None else len(data.languages),
        "data.languages": data.languages,
        "data.max_pairs_per_language": data.max_pairs_per_language,
        "data.pairs_per_language": data.pairs_per_language or None,
        "batching.mode": batching.mode,
        "batching.alpha": batching.effective_alpha,
        "batching.batch_size": batching.batch_size,
        "optim.lr": optim.lr,
        "optim.weight_decay": optim.weight_decay,
        "optim.warmup_steps": optim.warmup_steps,
        "optim.schedule": optim.schedule,
        "max_steps": config.max_steps,
        "seed": config.seed,
        "model.name": model.name,
        "model.num_layers": model.num_layers,
        "model.train_layers": model.train_layers,
        "model.temperature": model.temperature,
        "model.max_query_length": model.max_query_length,
        "model.max_passage_length": model.max_passage_length,
        "model.freeze_embeddings": model.freeze_embeddings,
    }
    values = {key: value for key, value in values.items() if value is not None}
    for label, chosen in (("scaling axis", axes), ("tuned", tuned)):
        for path, value in chosen.items():
            shown = values.get(path, value)
            values[path] = f"{json.dumps(shown) if not isinstance(shown, str) else shown} ({label})"
    return values


def trial_card(spec: StudySpec, selected: SelectedTrial, config: TrainConfig, model: BiEncoder,
               repo_id: str | None = None) -> ModelCardInfo:
    """The ModelCardInfo of a selected trial's model."""
    row = selected.row
    axes, tuned = _config_values(row, AXIS_PREFIX), _config_values(row, TUNED_PREFIX)
    base = base_model_info(config.model.name, num_layers=config.model.num_layers)
    display = _plain(row.get(MODEL_DISPLAY_NAME)) or model.display_name
    cell = _plain(row.get(CELL))
    origin = f"cell {cell}" if selected.directory_name.startswith("cell-") else f"trial {selected.trial_id}"
    evaluation = evaluation_languages(spec)
    details = {
        final.dataset: f"languages {', '.join(evaluation[final.dataset]) or 'all'}; "
                       + (f"{final.max_queries} queries sampled" if final.max_queries else "all queries")
        for final in spec.evaluation.final
    }
    deviations = "".join(f"\n- {line}" for line in spec.deviations)
    description = (
        f"A multilingual bi-encoder for dense retrieval: {display}, fine-tuned with hybrid batches by "
        f"hybridir in its `{spec.name}` study, {origin} ({_describe_axes(axes)}).\n\n"
        f"The study asks: {spec.question.strip()}"
        + (f"\n\nWhere the study departs from the reference setup:{deviations}" if deviations else "")
    )
    return ModelCardInfo(
        model_name=f"{display}, hybrid-batch fine-tuned ({spec.name} study, {origin})",
        description=description,
        base_model=base.hub_id,
        base_model_name=base.name,
        base_model_note=base.note,
        training_description=_plain(row.get(MODEL_TRAINING)) or model.training_description,
        training_datasets=[config.data.source],
        evaluation_datasets=[final.dataset for final in spec.evaluation.final],
        evaluation_details=details,
        languages=list(dict.fromkeys([*training_languages(config), *(lang for langs in evaluation.values()
                                                                     for lang in langs)])),
        hyperparameters=hyperparameters(config, axes, tuned),
        metrics=final_metrics(row),
        study=spec.name,
        cell=None if cell is None else int(cell),
        cell_axes=axes,
        trial_id=selected.trial_id,
        phase=str(row.get(PHASE)),
        seed=config.seed,
        status=_plain(row.get(STATUS)),
        steps_trained=None if _plain(row.get(STEP)) is None else int(_plain(row.get(STEP))),
        selection=selected.selection,
        repo_id=repo_id,
    )


# ---------------------------------------------------------------------------- export
def _export_selected(spec: StudySpec, selected: SelectedTrial, destination: Path, *, verify: bool,
                     repo_id: str | None) -> Path:
    config = trial_train_config(spec, selected.row)
    with local_copy(selected.checkpoint, MODEL_SUBDIR) as model_dir:
        model = BiEncoder.load(model_dir)
        card = trial_card(spec, selected, config, model, repo_id)
        return export_sentence_transformers(model, destination / selected.directory_name, card, verify=verify)


def _index_entry(spec: StudySpec, selected: SelectedTrial) -> dict:
    row = selected.row
    metric = intermediate_metric(spec)
    cell = _plain(row.get(CELL))
    return {
        "directory": selected.directory_name,
        CELL: None if cell is None else int(cell),
        CONFIG_AXES: _config_values(row, AXIS_PREFIX),
        CONFIG_TUNED: _config_values(row, TUNED_PREFIX),
        TRIAL_ID: selected.trial_id,
        PHASE: _plain(row.get(PHASE)),
        SEED: trial_seed(row),
        STATUS: _plain(row.get(STATUS)),
        "objective": {"metric": metric, "mode": spec.search.mode, "value": _plain(row.get(metric))},
        "model": _plain(row.get(MODEL_DISPLAY_NAME)),
        "source_checkpoint": selected.checkpoint,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_index(destination: Path, spec: StudySpec, entries: list[dict]) -> Path:
    """Merge ``entries`` into ``destination/index.json`` (one entry per model directory that
    still exists) and rewrite ``README.md`` as its table."""
    path = destination / INDEX_FILE
    previous = json.loads(path.read_text())["models"] if path.is_file() else []
    merged = {entry["directory"]: entry for entry in previous}
    merged.update({entry["directory"]: entry for entry in entries})
    models = [merged[name] for name in sorted(merged) if (destination / name).is_dir()]
    path.write_text(json.dumps({"study": spec.name, "models": models}, indent=2, default=str) + "\n")
    lines = [
        f"# Exported models of study `{spec.name}`",
        "",
        "Sentence Transformers directories (each with its model card, README.md); rebuilt by "
        "`python study/export.py <study dir>`.",
        "",
        "| directory | cell | axes | trial | phase | seed | objective |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in models:
        objective = entry["objective"]
        value = "" if objective["value"] is None else f"{objective['metric']} = {objective['value']:.4f}"
        axes = ", ".join(f"{k}={v}" for k, v in entry[CONFIG_AXES].items())
        seed = entry[SEED] if entry[SEED] is not None else "base"
        lines.append(f"| [{entry['directory']}]({entry['directory']}/) | {entry[CELL]} | {axes} | "
                     f"{entry[TRIAL_ID]} | {entry[PHASE]} | {seed} | {value} |")
    (destination / INDEX_README).write_text("\n".join(lines) + "\n")
    return path


def _export(run_dir: Path, spec: StudySpec, selected: list[SelectedTrial], to: str | Path | None, *,
            verify: bool, repo_id: str | None = None) -> list[Path]:
    destination = Path(to) if to is not None else run_dir / MODELS_DIR
    destination.mkdir(parents=True, exist_ok=True)
    exported, entries = [], []
    try:
        for choice in selected:
            exported.append(_export_selected(spec, choice, destination, verify=verify, repo_id=repo_id))
            entries.append(_index_entry(spec, choice))
            log.info("exported trial %s -> %s", choice.trial_id, exported[-1])
    finally:
        if entries:  # what was exported before a failure stays listed
            write_index(destination, spec, entries)
    return exported


def export_study(run_dir: str | Path, cells: Sequence[int] | None = None, to: str | Path | None = None, *,
                 storage: str | None = None, verify: bool = True, repo_id: str | None = None) -> list[Path]:
    """Export each cell's best completed trial (``cells``: only these) to ``to`` (default
    ``RUN_DIR/models``) as ``cell-<k>/``; returns the directories. ``repo_id`` only goes into
    the cards' usage snippet. Cells without a completed trial are skipped with a warning;
    StudyExportError (before any model is loaded) for a missing study file, an unknown cell,
    no completed trial, or a missing checkpoint."""
    run_dir = Path(run_dir)
    spec = read_study(run_dir)
    trials = finished_trials(run_dir, spec)
    selected = select_cells(spec, trials, storage_location(spec, run_dir, storage), cells)
    return _export(run_dir, spec, selected, to, verify=verify, repo_id=repo_id)


def export_trial(run_dir: str | Path, trial_id: str, to: str | Path | None = None, *,
                 storage: str | None = None, verify: bool = True, repo_id: str | None = None) -> Path:
    """Export one finished trial (any status whose checkpoint exists) as ``trial-<id>/``."""
    run_dir = Path(run_dir)
    spec = read_study(run_dir)
    trials = finished_trials(run_dir, spec)
    selected = select_trial(spec, trials, storage_location(spec, run_dir, storage), trial_id)
    return _export(run_dir, spec, [selected], to, verify=verify, repo_id=repo_id)[0]


# ---------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python study/export.py",
        description="Export a study's trained models (each cell's best trial by the search objective, or one "
        "trial) as Sentence Transformers directories with Hugging Face model cards.",
        epilog="Default destination: RUN_DIR/models/cell-<k>/ (+ index.json, README.md). Which trial, where its "
        "checkpoint is, the layout: the docstring of study/export.py.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the study directory (study/run.py --output)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--cell", dest="cells", type=int, nargs="+", action="extend", metavar="N",
                       help="export only these cells' best trials (repeatable)")
    which.add_argument("--trial", metavar="TRIAL_ID", help="export this trial instead of the cells' best")
    parser.add_argument("--to", metavar="DIR", help="write the models under DIR instead of RUN_DIR/models")
    parser.add_argument("--storage", metavar="PATH_OR_URI",
                        help="the study's Ray storage, when not resources.storage_path or RUN_DIR/ray (a moved study)")
    parser.add_argument("--push-to-hub", metavar="REPO",
                        help="also upload the exported model to this Hugging Face Hub repository (one model: "
                        "--trial, one --cell, or a one-cell study)")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip reloading each export with sentence-transformers to compare embeddings")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not log.handlers:  # progress and skipped cells on stderr; other libraries' logs stay as they are
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[export] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        # Local directories (study.storage): a cloud URI is named here, not written to ./s3:/...
        args.run_dir = local_directory(args.run_dir, "RUN_DIR")
        if args.to is not None:
            args.to = local_directory(args.to, "--to")
        if args.push_to_hub:
            check_can_push(args.push_to_hub)  # offline or malformed: before any work
            if args.trial is None:
                spec = read_study(args.run_dir)
                asked = args.cells if args.cells is not None else range(len(spec.cells()))
                if len(set(asked)) != 1:
                    raise StudyExportError(
                        f"--push-to-hub uploads one model; {len(set(asked))} cells are selected: "
                        "add --cell N or --trial TRIAL_ID"
                    )
        if args.trial is not None:
            exported = [export_trial(args.run_dir, args.trial, args.to, storage=args.storage,
                                     verify=args.verify, repo_id=args.push_to_hub)]
        else:
            exported = export_study(args.run_dir, args.cells, args.to, storage=args.storage,
                                    verify=args.verify, repo_id=args.push_to_hub)
        for directory in exported:
            print(directory)
        if args.push_to_hub:
            print(push_to_hub(exported[0], args.push_to_hub, private=args.private or None))
    except (StudyExportError, StudyConfigError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
