"""Run a hybrid-batch scaling study on Ray (local by default, or a cluster with --address).

    python study/run.py                      # the small default study (< 20 min on 2 CPU cores)
    python study/run.py --study languages    # a shipped study by name (see --help), or a YAML path
    python study/run.py --study batch --set max_steps=20 --samples 1 --seeds 2
    python study/run.py --resume runs/batch-20250101-120000

Phases: (0) the zero-shot baseline: the untrained starting model on every final evaluation
set (once per study, cached in results/); (1) search: a grid over the study's scaling axes,
Optuna (TPE, seeded) within each cell, ASHA per cell; (2) with --seeds N, each cell's best
configuration re-run with N seeds; (3) reports (CSV + PNG) rebuilt from the stored results. Ctrl-C / a killed driver
loses nothing: --resume DIR continues where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

for _name, _value in {
    "RAY_USAGE_STATS_ENABLED": "0",
    # MLflow 3 (--tracker mlflow) reports usage to its servers unless told not to, as Ray would.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

from study import interrupt  # noqa: E402
from study.console import headline_final, say, set_verbosity  # noqa: E402
from study.spec import TRACKERS, StudyConfigError, StudySpec, dump_study, load_study  # noqa: E402
from study.vocabulary import (  # noqa: E402
    AXIS_PREFIX,
    CELL,
    CONFIG_AXES,
    CONFIG_TUNED,
    PHASE,
    SEARCH,
    SEED,
    SEEDS,
    SOURCE_TRIAL,
    SPEC_FILE,
    TRIAL_ID,
    TUNED_PREFIX,
    intermediate_metric,
    prefixed_columns,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from study.question import describe
    from study.spec import study_names

    parser = argparse.ArgumentParser(
        prog="python study/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Generated from the files and the question registry: never out of date.
        epilog="Studies live in study/studies/*.yaml; see study/README.md. Questions a study's "
        f"report.builder can name:\n{describe()}",
    )
    parser.add_argument(
        "--study", default="default",
        help=f"study name ({', '.join(study_names())}) or a study YAML path",
    )
    parser.add_argument("--config", type=Path, help="a study YAML file (same as --study PATH)")
    parser.add_argument(
        "--profile", metavar="NAME",
        help="apply one of the study's named override sets first (e.g. 'local': the recipe sized for 2 CPU "
        "cores, in each study YAML's profiles section); --set values still win",
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting (repeatable): a study field (search.seeds=2, resources.num_workers=1, "
        "axes.batching.alpha=[0,1]) or a training-config field (max_steps=20, model.num_layers=1)",
    )
    parser.add_argument("--resume", metavar="DIR", help="continue an interrupted study in DIR (a local path)")
    parser.add_argument(
        "--address", help="Ray cluster to join (e.g. 'auto' on a cluster head); default: a local Ray instance"
    )
    parser.add_argument("--num-workers", type=int, help="Ray Train DDP workers per trial (resources.num_workers)")
    parser.add_argument("--samples", type=int, help="Optuna trials per grid cell (search.samples_per_cell)")
    parser.add_argument("--seeds", type=int, help="re-run each cell's best configuration with N seeds (search.seeds)")
    parser.add_argument("--output", metavar="DIR",
                        help="study directory, a local or shared-filesystem path (default: runs/<study>-<timestamp>); Ray's checkpoints may go to cloud storage with --set resources.storage_path=s3://...")
    parser.add_argument(
        "--tracker", dest="trackers", action="append", default=[], choices=TRACKERS,
        help="also log every trial's config and metrics to this tracker (repeatable): tensorboard, mlflow "
        "(sqlite:///<study dir>/mlflow.db unless MLFLOW_TRACKING_URI or tracking.mlflow_tracking_uri), wandb",
    )
    parser.add_argument(
        "--plan", action="store_true",
        help="print the cells, trials, estimated wall time and each claim's minimum detectable difference, "
        "then exit: no Ray, no training (study/plan.py); with --resume DIR, DIR's own results refine it",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="print every report's full metric dictionary, Ray's INFO logs and the workers' own output",
    )
    return parser.parse_args(argv)


def resolve_spec(args: argparse.Namespace) -> tuple[StudySpec, Path]:
    """The validated study and its output directory; nothing expensive has run yet."""
    from study.storage import local_directory

    if args.resume is not None:
        # Study directories are local paths (study.storage): a cloud URI is named here, never
        # turned into a local folder named "s3:".
        args.resume = local_directory(args.resume, "--resume")
        frozen = args.resume / SPEC_FILE
        if not frozen.is_file():
            raise StudyConfigError(f"--resume {args.resume}: no {SPEC_FILE} there (not a study directory)")
        if (args.sets or args.config or args.profile or args.samples or args.seeds is not None or args.num_workers
                or args.trackers):
            raise StudyConfigError(
                "--resume continues the stored study as it was (its trackers included); "
                "drop --set/--config/--samples/--tracker/..."
            )
        return load_study(frozen), args.resume
    sets = list(args.sets)
    if args.num_workers is not None:
        sets.append(f"resources.num_workers={args.num_workers}")
    if args.samples is not None:
        sets.append(f"search.samples_per_cell={args.samples}")
    if args.seeds is not None:
        sets.append(f"search.seeds={args.seeds}")
    if args.trackers:
        sets.append(f"tracking.trackers={json.dumps(args.trackers)}")
    spec = load_study(args.config or args.study, sets, profile=args.profile)
    output = (local_directory(args.output, "--output") if args.output is not None
              else Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return spec, output


def prepare(args: argparse.Namespace) -> tuple[StudySpec, Path]:
    """All validation, before Ray starts: schema, data, output directory, local resources."""
    from study.checks import (
        check_batch_division,
        check_data,
        check_local_resources,
        check_models,
        check_optuna_storage,
        check_output_dir,
        check_storage_path,
        check_trackers,
    )

    spec, output = resolve_spec(args)
    if args.resume is None and (output / SPEC_FILE).exists():
        raise StudyConfigError(f"--output {output} already holds a study; use --resume {output} or a new --output")
    if args.address is None:
        check_local_resources(spec)
    check_batch_division(spec)
    try:
        check_data(spec)
    except StudyConfigError:
        raise
    except (ValueError, OSError) as exc:
        # A data file missing, altered or malformed: its message names the file.
        raise StudyConfigError(f"data: {exc}") from exc
    check_models(spec)
    output = check_output_dir(output)
    check_storage_path(spec)
    check_optuna_storage(spec, output)
    check_trackers(spec)
    if args.resume is None:
        dump_study(spec, output / SPEC_FILE)
    return spec, output


def start_ray(spec: StudySpec, address: str | None) -> dict:
    """Local Ray sized to this machine, or join a cluster; returns the cluster's resources.

    Tune functions hold a custom ``tune_driver`` slot instead of a CPU: on 2 cores the
    default (1 CPU per Tune function + 2 Train workers) waits forever.
    """
    import ray

    from study.checks import check_cluster_resources
    from study.console import ray_logging_config, verbose_enabled

    if address:
        # Cluster nodes have their own environments: carry the data/model locations and the
        # offline switches the driver was started with.
        carried = {k: v for k, v in os.environ.items() if k.startswith(("HYBRIDIR_", "HF_", "TOKENIZERS_"))}
        ray.init(address=address, runtime_env={"env_vars": carried}, logging_config=ray_logging_config(),
                 logging_level=logging.INFO if verbose_enabled() else logging.WARNING)
        cluster = ray.cluster_resources()
        check_cluster_resources(spec, cluster)
        return cluster
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Train's preemption watcher polls for spot-instance notices, which a local machine never
    # gets; it costs an actor per trial and logs a core-worker error line for each.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Train's controller notices a finished worker at its next health check (every 2 s by
    # default); a trial's fit() then returned 7 s after its last report here, 4 s at 0.25 s
    # (bench/README.md (9)). Local only: a cluster keeps Ray's default.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    from study.ray_internals import local_ray_instances

    if local_ray_instances():
        # Train's placement-group cleaner locates the State API by auto-detection, which fails
        # with two local instances: a pruned trial's workers would then never be released.
        say("warning: another local Ray instance is running on this machine; trials that "
            "ASHA stops may not release their workers. Run one local study at a time.")
    cpus = os.cpu_count() or 1
    need = spec.resources.num_workers * spec.resources.cpus_per_worker
    import torch

    gpus = torch.cuda.device_count()
    slots = max(1, int(cpus // need)) if not spec.resources.use_gpu else max(1, gpus // spec.resources.num_workers)
    ray.init(
        num_cpus=cpus,
        num_gpus=gpus,
        resources={"tune_driver": slots},
        # ASHA kills a Tune function mid-fit; Train frees its workers through the State API,
        # which needs the dashboard. Without it the next trial waits forever.
        include_dashboard=True,
        object_store_memory=512 * 1024**2,
        log_to_driver=True,
        # WARNING unless --verbose, in the driver and in every worker (study.console).
        logging_level=logging.INFO if verbose_enabled() else logging.WARNING,
        logging_config=ray_logging_config(),
    )
    return ray.cluster_resources()


def _trainable(spec: StudySpec, storage: str, experiment: str, cluster: dict):
    from ray import tune

    from study.trial import run_trial

    slot = {"tune_driver": 1} if "tune_driver" in cluster else {"CPU": 0.1}
    return tune.with_resources(
        tune.with_parameters(run_trial, spec_data=spec.model_dump(mode="json"), storage_path=storage,
                             experiment=experiment),
        slot,
    )


def run_experiment(spec, output: Path, storage: str, experiment: str, searcher, scheduler, cluster):
    """Start, restore or recover one Tune experiment and run it to the end.

    Restore: Tune's saved state is read first; if a file of it is broken the experiment
    directory is moved aside and the phase continues as a new experiment whose searcher skips
    every trial the results table already holds (the interrupted trial starts over).
    """
    from ray import tune

    from study.results import ResultStore
    from study.search import max_concurrent_trials
    from study.tune_callback import ResultsCallback, TakeSignalsFromTune, TrialConsole

    total = searcher.total_trials
    objective = intermediate_metric(spec)
    trainable = _trainable(spec, storage, experiment, cluster)
    path = f"{storage.rstrip('/')}/{experiment}"
    tuner = _restore(path, experiment, trainable)
    if tuner is None:
        done = _finished_rows(ResultStore(output), experiment)
        if done:
            skipped = searcher.skip_finished(done)
            say(f"{experiment}: {skipped} trial(s) already in results/ are kept; "
                f"{searcher.remaining_trials} left to run")
        resources = spec.resources.model_dump()
        cleanup = None if spec.resources.keep_checkpoints else storage
        if searcher.remaining_trials > 0:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=searcher.remaining_trials,
                    max_concurrent_trials=max_concurrent_trials(spec, cluster),
                    trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}",
                ),
                run_config=tune.RunConfig(
                    name=experiment,
                    storage_path=storage,
                    callbacks=[
                        ResultsCallback(output, resources, train_runs_dir=cleanup, experiment=experiment,
                                        storage=storage, keep_best=(objective, spec.search.mode)),
                        TrialConsole(experiment, total, objective, spec.base_seed,
                                     max_steps=max_steps_per_cell(spec), already_done=len(done)),
                        *tracker_callbacks(spec, output, experiment),
                        TakeSignalsFromTune(),
                    ],
                    # Retries happen inside Train (FailureConfig, from the last checkpoint).
                    failure_config=tune.FailureConfig(max_failures=0),
                    verbose=0,  # progress lines come from TrialConsole
                ),
            )
    recorder = ResultsCallback(output, spec.resources.model_dump(), train_runs_dir=None, experiment=experiment,
                               storage=storage)
    if tuner is not None:
        with interrupt.tune_phase():
            grid = tuner.fit()
        recorder.reconcile(grid)
    # A finished trial whose per-query file did not reach results/ (storage unreachable at the
    # time, or a callback restored from an older study) gets it now; present ones are kept.
    recorder.backfill_per_query()
    # Tune returns normally after Ctrl-C; the study's own table says whether every trial of
    # this phase finished (experiment names are the phase names).
    finished = len(_finished_rows(ResultStore(output), experiment))
    if finished < total:
        raise StudyInterrupted(f"{experiment}: {finished} of {total} trials finished")


def max_steps_per_cell(spec: StudySpec) -> dict[int, int]:
    """Each grid cell's training length (the console's "step 20/40")."""
    return {index: spec.train_config(cell).max_steps for index, cell in enumerate(spec.cells() or [{}])}


def tracker_callbacks(spec: StudySpec, output: Path, experiment: str) -> list:
    """The Tune logger callbacks of the study's ``tracking.trackers`` (none by default)."""
    if not spec.tracking.trackers:
        return []
    from study.trackers import tracker_callbacks as build

    return build(spec.tracking.trackers, study_name=spec.name, output_dir=output,
                 base_seed=spec.base_seed, experiment=experiment,
                 mlflow_tracking_uri=spec.tracking.mlflow_tracking_uri, wandb_project=spec.tracking.wandb_project)


def _finished_rows(store, experiment: str) -> list[dict]:
    trials = store.trials()
    if trials.empty:
        return []
    return trials[trials[PHASE] == experiment].to_dict("records")


def _restore(path: str, experiment: str, trainable):
    """The restored Tuner, or None when there is nothing (usable) to restore."""
    from ray import tune

    from study.recovery import broken_state, has_state, quarantine
    from study.storage import is_uri

    local = not is_uri(path)
    if local and not has_state(Path(path)):
        return None
    if not local and not tune.Tuner.can_restore(path):
        return None
    problem = broken_state(Path(path)) if local else None
    if problem is None:
        try:
            say(f"restoring {experiment} experiment from {path}")
            return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        except Exception as exc:  # noqa: BLE001 - reported with the path, then recovered from
            problem = f"{path}/tuner.pkl: {type(exc).__name__}: {exc}"
    if not local:
        raise StudyConfigError(
            f"Tune state at {path} cannot be restored ({problem}); move it away and --resume again: "
            "the finished trials in results/ are kept"
        )
    moved = quarantine(Path(path))
    say(f"warning: Tune's saved state is broken: {problem}. It was moved to {moved}; "
        f"continuing {experiment} from the trials already in results/ (an interrupted trial starts over).")
    return None


class StudyInterrupted(RuntimeError):
    """Tune stopped before every trial finished (Ctrl-C / SIGINT); the state is saved."""


def ensure_zero_shot(output: Path, compute) -> bool:
    """Store the zero-shot baseline unless results/ already holds it (a resumed study).

    ``compute()`` returns (model display name, ``final/<dataset>/<key>`` metrics, per-query
    rows as a frame or parquet bytes). Returns whether it ran."""
    from study.results import ResultStore

    store = ResultStore(output)
    cached = store.zero_shot()
    if cached is not None:
        say(f"zero-shot baseline of {cached['model']}: cached in {store.dir}")
        return False
    started = time.time()
    name, metrics, per_query = compute()
    store.write_zero_shot(name, metrics, per_query)
    say(f"zero-shot baseline of {name} ({time.time() - started:.0f} s): {headline_final(metrics)}")
    return True


def zero_shot_on_ray(spec: StudySpec, local: bool):
    """The zero-shot evaluation as a Ray task where the trials' resources are.

    A Ray task, not the driver: on a cluster the driver's node may have no GPU (or not the
    trials' CPUs), and the baseline must be scored on the hardware trials are scored on. It
    asks for one Train worker's resources (a GPU with use_gpu), so it fits wherever a trial's
    worker fits; on local CPUs it takes all of one trial's CPUs (check_local_resources made
    sure they exist). It runs before the first Tune experiment, so on 2 local cores it never
    competes with trials: the Tune functions hold `tune_driver` slots, not CPUs, and no Train
    worker exists yet.
    """
    import ray

    from study.trial import zero_shot_inputs, zero_shot_task

    resources = spec.resources
    cpus = resources.cpus_per_worker
    if local and not resources.use_gpu:
        cpus = min(float(os.cpu_count() or 1), resources.num_workers * resources.cpus_per_worker)
    task = ray.remote(zero_shot_task).options(num_cpus=cpus, num_gpus=1 if resources.use_gpu else 0, max_retries=1)
    threads = None if resources.use_gpu else max(1, int(cpus))

    def compute():
        return interrupt.wait_for(task.remote(**zero_shot_inputs(spec), threads=threads),
                                  "during the zero-shot evaluation")

    return compute


def export_best_models(output: Path) -> list[Path]:
    """Each cell's best trial (by the search objective) as a sentence-transformers directory
    with its model card, under ``<output>/models`` (:mod:`study.export`). A failure is named,
    never fatal: the results and reports are already written, and
    ``python study/export.py DIR`` can be run again later."""
    from hybridir.export import ExportError
    from study.export import StudyExportError, export_study

    try:
        directories = export_study(output)
    except (StudyExportError, ExportError, OSError) as exc:
        say(f"warning: models not exported ({exc}); retry with: python study/export.py {output}")
        return []
    if directories:
        say(f"exported {len(directories)} model(s), each cell's best trial (sentence-transformers + model card): "
            f"{directories[0].parent}")
    return directories


def seed_configs(spec: StudySpec, output: Path) -> list[dict]:
    """Each cell's best completed search trial (the selection rule, :mod:`study.selection`),
    once per new seed."""
    from study.results import ResultStore
    from study.selection import spec_best_trials

    best = spec_best_trials(spec, ResultStore(output).trials(), phases=(SEARCH,))
    base_seed = spec.base_seed
    configs = []
    for row in best.to_dict("records"):
        axes, tuned = prefixed_columns(row, AXIS_PREFIX), prefixed_columns(row, TUNED_PREFIX)
        for index in range(spec.search.seeds):
            configs.append({PHASE: SEEDS, CELL: int(row[CELL]), CONFIG_AXES: axes, CONFIG_TUNED: tuned,
                            SEED: base_seed + 1 + index, SOURCE_TRIAL: row[TRIAL_ID]})
    return configs


def plan(args: argparse.Namespace) -> int:
    """``--plan``: the study's cost and power, printed; nothing runs (study/plan.py)."""
    from hybridir.data.files import DataFileError
    from study.plan import plan_command

    try:
        spec, _ = resolve_spec(args)
        print(plan_command(spec, study_dir=args.resume, source=str(args.resume or args.config or args.study)))
    except (StudyConfigError, DataFileError) as exc:  # a data file the plan counts texts of, unreachable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plan:
        return plan(args)
    try:
        spec, output = prepare(args)
    except StudyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    from study.report import build_reports
    from study.results import history_rows
    from study.search import CellGridSearch, FixedConfigSearch, PerCellASHA
    from study.storage import optuna_storage_location, storage_location

    started = time.time()
    if spec.resources.activation_cache is None:
        # Resolved here, not frozen into study.yaml: a moved study directory keeps its cache.
        spec.resources.activation_cache = os.path.abspath(output / "activation-cache")
    storage = storage_location(spec.resources.storage_path, output)
    seeds = f" + {spec.search.seeds} seed re-run(s) of each cell's best" if spec.search.seeds else ""
    say(f"{spec.name}: {len(spec.cells()) or 1} cells x {spec.search.samples_per_cell} trials{seeds} -> {output}")
    set_verbosity(args.verbose)
    cluster = start_ray(spec, args.address)
    interrupt.after_ray_init(args.verbose)  # ray.init installs its own SIGTERM handler
    try:
        interrupt.check("while Ray started")
        ensure_zero_shot(output, zero_shot_on_ray(spec, local=args.address is None))
        # One Optuna study per cell in Optuna's own storage (optuna-dashboard reads it); named
        # after the study directory, so studies sharing one database stay apart.
        searcher = CellGridSearch(spec, storage=optuna_storage_location(spec, output),
                                  study_name=output.resolve().name)
        scheduler = PerCellASHA(spec, functools.partial(history_rows, str(output))) if spec.search.asha else None
        run_experiment(spec, output, storage, SEARCH, searcher, scheduler, cluster)
        if spec.search.seeds:
            interrupt.check("between the search and the seed re-runs")
            configs = seed_configs(spec, output)
            if configs:
                fixed = FixedConfigSearch(configs, intermediate_metric(spec), spec.search.mode)
                run_experiment(spec, output, storage, SEEDS, fixed, None, cluster)
        interrupt.check("after the last trial")
    except StudyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StudyInterrupted, interrupt.Interrupted) as exc:
        interrupt.stopping()
        ray.shutdown()
        build_reports(output)
        say(f"interrupted ({exc}); {interrupt.resume_line(output)}")
        return interrupt.exit_code(interrupt.received() or signal.SIGINT)
    finally:
        interrupt.stopping()  # from here on a signal is recorded, and the reports and exports finish
        ray.shutdown()
    reports = build_reports(output)
    if spec.resources.export_models:
        export_best_models(output)
    else:
        say(f"models not exported (resources.export_models=false); export later: python study/export.py {output}")
    elapsed = time.time() - started
    say(f"finished in {elapsed / 60:.1f} min; results: {output / 'results'}")
    say(f"report: {reports}")
    return 0


if __name__ == "__main__":
    # Ctrl-C / SIGTERM: study.interrupt owns both signals (Tune saves its state, Ray is shut
    # down before interpreter teardown, one line says how to resume, exit 130 / 143).
    with interrupt.handling():
        code = main()
    sys.exit(code)
