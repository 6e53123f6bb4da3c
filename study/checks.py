"""Checks that need more than the schema: data sources, output directory, resources.

All run before Ray starts (the cluster-resource check runs right after connecting, before
any trial), so a bad study fails in seconds with the field named, never mid-study.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from pathlib import Path

from hybridir.data.registry import (
    eval_set_kind,
    eval_set_languages,
    list_eval_sets,
    list_train_sources,
    load_eval_set,
    load_train_source,
    train_source_languages,
)
from hybridir.data.splits import LeakageError, check_no_leakage
from hybridir.evaluation.evaluator import metric_keys
from hybridir.evaluation.vocabulary import CROSS, MONO, MULTI, RANK_DISTANCE, summary_key
from hybridir.languages import canonical
from study.question import get_question
from study.spec import TRACKERS, StudyConfigError, StudySpec
from study.storage import (
    check_storage_location,
    check_writable_directory,
    local_directory,
    open_optuna_storage,
    optuna_storage_location,
)


@lru_cache(maxsize=None)
def _eval_languages(dataset: str) -> tuple[str, ...]:
    declared = eval_set_languages(dataset)
    return tuple(declared if declared is not None else load_eval_set(dataset).languages)


@lru_cache(maxsize=None)
def _train_languages(source: str) -> tuple[str, ...]:
    declared = train_source_languages(source)
    return tuple(declared if declared is not None else load_train_source(source).languages)


def _canonical(code: str, field: str) -> str:
    try:
        return canonical(code)
    except ValueError as exc:
        raise StudyConfigError(f"{field}: {exc}") from None


def _check_eval_set(dataset: str, languages: list[str] | None, field: str) -> None:
    known = list_eval_sets()
    if dataset not in known:
        raise StudyConfigError(f"{field}.dataset: unknown evaluation set {dataset!r}; known: {known}")
    if languages is None:
        return
    available = set(_eval_languages(dataset))
    for index, code in enumerate(languages):
        if _canonical(code, f"{field}.languages[{index}]") not in available:
            raise StudyConfigError(
                f"{field}.languages[{index}]: {dataset} has no language {code!r} (has {sorted(available)})"
            )


def check_data(spec: StudySpec) -> None:
    """Dataset names and languages exist; no cell asks for more languages than its source has."""
    intermediate = spec.evaluation.intermediate
    _check_eval_set(intermediate.dataset, intermediate.languages, "evaluation.intermediate")
    for index, final in enumerate(spec.evaluation.final):
        _check_eval_set(final.dataset, final.languages, f"evaluation.final[{index}]")
    check_search_metric(spec)

    sources = list_train_sources()
    for cell in spec.cells() or [{}]:
        where = ", ".join(f"axes[{k!r}]={v!r}" for k, v in cell.items()) or "base"
        data = spec.train_config(cell).data
        if data.source not in sources:
            raise StudyConfigError(f"{where}: data.source {data.source!r} is not a training source; known: {sources}")
        available = _train_languages(data.source)
        if data.num_languages is not None and data.num_languages > len(available):
            raise StudyConfigError(
                f"{where}: data.num_languages={data.num_languages} but {data.source} has only "
                f"{len(available)} languages"
            )
        requested = list(data.languages or []) + list(data.pairs_per_language)
        for code in requested:
            if _canonical(code, f"{where}: data.languages") not in available:
                raise StudyConfigError(f"{where}: data.languages: {data.source} has no language {code!r}")

    check_leakage(spec)
    check_claims(spec)
    check_question(spec)


@lru_cache(maxsize=None)
def _lareqa_settings(dataset: str, languages: tuple[str, ...] | None) -> tuple[str, ...]:
    """The LAReQA settings the set's per-query rows will have (restricted to ``languages``):
    mono needs a query with an answer in its own language, cross one with an answer in
    another (AfriQA's queries are in African languages, its passages in en/fr: no mono)."""
    corpus = load_eval_set(dataset, languages=None if languages is None else list(languages))
    mono = cross = False
    for language, queries in corpus.queries.items():
        for qid in queries:
            answers = corpus.relevant.get(qid, {})
            mono = mono or language in answers
            cross = cross or any(other != language for other in answers)
        if mono and cross:
            break
    return tuple(s for s, present in ((MONO, mono), (CROSS, cross), (MULTI, True)) if present)


def check_claims(spec: StudySpec) -> None:
    """What the schema cannot see: a claim's languages (``involving``, ``worst_language``) are
    scored by its datasets, and its settings exist in their rows (an AfriQA claim on the
    monolingual setting fails here, not as "not tested" after the study ran). The kind checks
    (a bitext set has no mAP settings) run in the schema (study.spec)."""
    finals = {final.dataset: final for final in spec.evaluation.final}
    for index, claim in enumerate(spec.claims):
        if claim.untestable:
            continue
        where = f"claims[{index}] ({claim.id})"
        for dataset in claim.datasets:
            final = finals[dataset]
            restricted = tuple(sorted(map(canonical, final.languages))) if final.languages else None
            available = set(restricted or _eval_languages(dataset))
            for field in ("involving", "worst_language"):
                for position, code in enumerate(getattr(claim, field) or []):
                    if _canonical(code, f"{where}.{field}[{position}]") not in available:
                        raise StudyConfigError(f"{where}.{field}[{position}]: {dataset} (as evaluated: evaluation.final) "
                                               f"has no language {code!r} (has {sorted(available)})")
            if eval_set_kind(dataset) != "lareqa":
                continue
            produced = _lareqa_settings(dataset, restricted)
            field = "setting" if claim.metric_weights is None else "metric_weights"
            for setting in claim.settings:
                if setting not in produced:
                    raise StudyConfigError(f"{where}.{field}: {dataset} has no {setting!r} setting (its queries and "
                                           f"candidates give {list(produced)})")


def check_question(spec: StudySpec) -> None:
    """The pre-Ray checks of the study's question (``report.builder``), if it has any
    (:class:`study.question.Question` ``check``)."""
    question = get_question(spec.report.builder)
    if question.check is not None:
        question.check(spec)


def final_languages(spec: StudySpec) -> set[str]:
    """The canonical codes of every language the final evaluation scores (its restriction, or
    the sets' own languages)."""
    languages: set[str] = set()
    for final in spec.evaluation.final:
        languages |= set(final.languages and map(canonical, final.languages) or _eval_languages(final.dataset))
    return languages


def canonical_code(code: str, field: str) -> str:
    """``code`` as a canonical language tag; StudyConfigError naming ``field`` if it is none."""
    return _canonical(code, field)


def check_models(spec: StudySpec) -> None:
    """Every cell's model resolves (preset, local directory, or hub id) and has the layers that
    ``model.train_layers`` asks to train: found here, not inside a Ray worker after start-up."""
    from hybridir.model import ModelNotAvailableError, model_depth

    depths: dict[tuple, int] = {}
    tuned = spec.tune.get("model.train_layers")
    for cell in spec.cells() or [{}]:
        where = ", ".join(f"axes[{k!r}]={v!r}" for k, v in cell.items()) or "base"
        model = spec.train_config(cell).model
        key = (model.name, model.num_layers)
        if key not in depths:
            try:
                depths[key] = model_depth(model)
            except ModelNotAvailableError as exc:
                raise StudyConfigError(f"{where}: model.name={model.name!r}: {exc}") from None
        requested = [model.train_layers] if model.train_layers is not None else []
        requested += [int(v) for v in tuned.candidate_values()] if tuned is not None else []
        for train_layers in requested:
            if not 1 <= train_layers <= depths[key]:
                raise StudyConfigError(
                    f"{where}: model.train_layers={train_layers} but {model.name!r} has {depths[key]} "
                    f"transformer layers (1 .. {depths[key]})"
                )


BATCH_SIZE = "batching.batch_size"


def check_batch_division(spec: StudySpec) -> None:
    """Every global batch size a trial can get (base, axes, tuned values) splits evenly over
    ``resources.num_workers`` DDP ranks: found here, not by the batch sampler inside a Ray
    worker after start-up."""
    workers = spec.resources.num_workers
    if workers == 1:
        return

    def fail(where: str, batch_size: int) -> None:
        raise StudyConfigError(
            f"{where}: {BATCH_SIZE}={batch_size} is not divisible by resources.num_workers={workers} "
            f"(every DDP rank gets an equal share of the global batch)"
        )

    for cell in spec.cells() or [{}]:
        batch_size = spec.train_config(cell).batching.batch_size
        if batch_size % workers:
            fail(", ".join(f"axes[{k!r}]={v!r}" for k, v in cell.items()) or "base", batch_size)
    tuned = spec.tune.get(BATCH_SIZE)
    if tuned is None:
        return
    if tuned.distribution == "int":
        # Optuna draws every integer of the range; among any num_workers consecutive ones
        # all but one are indivisible, so the scan stops within num_workers steps.
        values = range(int(tuned.low), int(tuned.high) + 1)
    else:
        values = tuned.candidate_values()
    for value in values:
        if int(value) % workers:
            fail(f"tune[{BATCH_SIZE!r}] ({tuned.distribution})", int(value))


def check_search_metric(spec: StudySpec) -> None:
    """ASHA and Optuna compare ``inter/<search.metric>``: the intermediate set's kind must
    produce that summary key (a bitext set has no ``cross_map``, a LAReQA set no
    ``accuracy``), else every trial would report a metric the searchers never see."""
    dataset = spec.evaluation.intermediate.dataset
    kind = eval_set_kind(dataset)
    produced = metric_keys(kind)
    if spec.search.metric not in produced:
        raise StudyConfigError(
            f"search.metric: {spec.search.metric!r} is not produced by evaluation.intermediate.dataset="
            f"{dataset!r} (scored as {kind}); it produces {sorted(produced)}"
        )
    languages = spec.evaluation.intermediate.languages
    cross_lingual = spec.search.metric.startswith(summary_key(CROSS, "")) or spec.search.metric == RANK_DISTANCE
    if kind == "lareqa" and cross_lingual and languages is not None and len(set(map(canonical, languages))) < 2:
        raise StudyConfigError(
            f"evaluation.intermediate.languages={languages}: search.metric {spec.search.metric!r} needs at least "
            "two languages (one language has no cross-lingual pairs)"
        )


def check_leakage(spec: StudySpec) -> None:
    """No cell's training data shares a question, article or document with an evaluation set.

    Each cell's whole training source after its article restrictions (``data.holdout_articles``,
    ``data.exclude_articles``: :func:`hybridir.train.training_articles`, what the trainer applies)
    is checked -- a superset of any trial's training split -- against every evaluation set as
    evaluated (an XQuAD-R ``held_out_articles`` setting keeps only the held-out articles). A study
    whose training and evaluation data overlap fails before Ray starts, naming the cell, the field
    and the overlap, not after a reviewer notices inflated numbers.
    """
    from hybridir.data.splits import keep_groups
    from hybridir.train import training_articles

    evaluations = [("evaluation.intermediate", spec.evaluation.intermediate)]
    evaluations += [(f"evaluation.final[{i}]", final) for i, final in enumerate(spec.evaluation.final)]
    corpora: dict[tuple, object] = {}
    checked: set[tuple] = set()
    for cell in spec.cells() or [{}]:
        data = spec.train_config(cell).data
        key = (data.source, data.holdout_articles and data.holdout_articles.model_dump_json(),
               tuple(sorted(data.exclude_articles)))
        if key in checked:
            continue
        checked.add(key)
        where = ", ".join(f"axes[{k!r}]={v!r}" for k, v in cell.items()) or "base"
        pairs = training_articles(load_train_source(data.source), data)
        for field, settings in evaluations:
            corpus_key = (settings.dataset, settings.held_out_articles and settings.held_out_articles.model_dump_json())
            if corpus_key not in corpora:
                corpus = load_eval_set(settings.dataset)
                groups = settings.article_groups()
                corpora[corpus_key] = corpus if groups is None else keep_groups(corpus, groups, f"{corpus.name}/held-out")
            try:
                check_no_leakage(pairs, corpora[corpus_key])
            except LeakageError as exc:
                held_out = settings.held_out_articles
                raise StudyConfigError(
                    f"{where}: data.source={data.source!r} (data.holdout_articles="
                    f"{data.holdout_articles and data.holdout_articles.model_dump()}, data.exclude_articles="
                    f"{data.exclude_articles}) leaks into {field} dataset {settings.dataset!r} ({field}."
                    f"held_out_articles={held_out and held_out.model_dump()}): {exc}. Train on other articles "
                    "(data.holdout_articles with the same fraction and seed as the evaluation's held_out_articles; "
                    "data.exclude_articles for articles another set shares) or evaluate other ones"
                ) from exc


def check_output_dir(path: str | Path, field: str = "--output") -> Path:
    """Create local directory ``path`` if needed and prove it writable, naming ``field``
    otherwise (a cloud URI is refused: :func:`study.storage.local_directory`)."""
    return check_writable_directory(path, field)


def check_storage_path(spec: StudySpec) -> None:
    """``resources.storage_path`` opens and takes a file (a local directory, or a URI of a
    filesystem pyarrow reaches); ``resources.activation_cache`` is a local directory (each
    node reads and writes its own)."""
    if spec.resources.storage_path:
        check_storage_location(spec.resources.storage_path, "resources.storage_path")
    if spec.resources.activation_cache:
        local_directory(spec.resources.activation_cache, "resources.activation_cache")


def check_optuna_storage(spec: StudySpec, study_dir: Path) -> None:
    """The Optuna storage opens (a reachable database with its driver, a writable journal
    path), before Ray starts; nothing is tuned, nothing is stored."""
    if not spec.tune:
        return
    location = optuna_storage_location(spec, study_dir)
    try:
        open_optuna_storage(location)
    except Exception as exc:  # noqa: BLE001 - a wrong URL or driver, an unwritable path: named below
        raise StudyConfigError(f"search.optuna_storage: cannot open {location!r}: {type(exc).__name__}: {exc}") from exc


# tracker -> (module Ray's callback imports, the pip package that provides it). TensorBoard's
# event files are written by tensorboardX (what Ray's TBXLoggerCallback uses); viewing them
# needs the tensorboard package as well.
TRACKER_PACKAGES = {
    "tensorboard": ("tensorboardX", "tensorboardX"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def check_tracker_packages(trackers: list[str]) -> None:
    """Raise :class:`StudyConfigError` for an unknown tracker name or a tracker whose package is
    not installed: the driver calls it before Ray starts (Ray's classes would raise only when
    built, and for tensorboardX with a bare ImportError)."""
    unknown = [name for name in trackers if name not in TRACKERS]
    if unknown:
        raise StudyConfigError(f"--tracker {', '.join(unknown)}: unknown tracker; choose from {', '.join(TRACKERS)}")
    for name in dict.fromkeys(trackers):
        module, package = TRACKER_PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise StudyConfigError(f"--tracker {name} needs the {package} package: pip install {package}") from exc


def check_trackers(spec: StudySpec) -> None:
    """Every ``tracking.trackers`` entry has its package installed (named with the fix); no Ray."""
    check_tracker_packages(spec.tracking.trackers)


def check_local_resources(spec: StudySpec, cpus: int | None = None, gpus: int | None = None) -> None:
    """One trial must fit on this machine (local Ray): CPUs, or GPUs when ``use_gpu``."""
    resources = spec.resources
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    need = resources.num_workers * resources.cpus_per_worker
    if need > cpus:
        raise StudyConfigError(
            f"resources.num_workers={resources.num_workers} x resources.cpus_per_worker="
            f"{resources.cpus_per_worker} needs {need:g} CPUs; this machine has {cpus}"
        )
    if resources.use_gpu:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        if resources.num_workers > gpus:
            raise StudyConfigError(
                f"resources.num_workers={resources.num_workers} with resources.use_gpu=true needs "
                f"{resources.num_workers} GPUs; this machine has {gpus}"
            )


def check_cluster_resources(spec: StudySpec, cluster: dict[str, float]) -> None:
    """The same check against a running cluster's total resources (``--address``)."""
    check_local_resources(spec, cpus=int(cluster.get("CPU", 0)), gpus=int(cluster.get("GPU", 0)))
