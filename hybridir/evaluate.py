"""Zero-shot evaluation of a bi-encoder: ``python -m hybridir.evaluate``.

How a set is scored comes from its registered kind (see
:mod:`hybridir.evaluation.evaluator`, the same evaluators the study's trials call). LAReQA sets
(xquad-r, mlqa-r, afriqa) are scored in the monolingual, cross-lingual and
multilingual settings (mAP over the full ranking, R@k, nDCG@10, F1@k, language-bias rank
distance); bitext sets (tatoeba, flores) by accuracy@1 in both directions. Every text is
encoded once. Results go to ``--output`` (default ``results/eval/<model-slug>/<dataset>/``):

* ``summary.json``: the flat summary (settings, counts, wall times: load, encode, score);
* LAReQA: ``matrix_<metric>.csv`` (query language x candidate language), ``per_language.csv``
  (per language: mono, cross out of / into it, multi, rank distance), ``multilingual.csv``,
  ``per_query.parquet``;
* bitext: ``pairs.csv``, ``per_query.parquet`` (one row per direction and sentence);
* with ``--save-embeddings``: ``embeddings/`` (see :meth:`EncodedCorpus.save`).

Example::

    python -m hybridir.evaluate --model me5-small-offline --dataset xquad-r --languages ar,de,en
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from hybridir.config import ModelConfig
from hybridir.data.registry import check_languages, eval_set_languages, list_eval_sets
from hybridir.evaluation.evaluator import EvaluationResult, build_evaluator
from hybridir.evaluation.vocabulary import (
    CROSS, DATASET, MAP, MODEL, MONO, MULTI, MULTILINGUAL, RANK_DISTANCE, SETTING, SETTINGS, n_cells_key,
    n_queries_key, summary_key,
)

log = logging.getLogger("hybridir.evaluate")


def model_slug(name: str, num_layers: int | None = None) -> str:
    """A directory-safe name for a preset, hub id or local directory."""
    base = Path(name).name if Path(name).exists() else name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "model"
    return f"{slug}-l{num_layers}" if num_layers is not None else slug


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hybridir.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small-offline", help="preset, hub model id, or local directory")
    parser.add_argument("--dataset", required=True, help=f"one of {list_eval_sets()}")
    parser.add_argument("--languages", help="comma-separated language codes (default: all of the dataset)")
    parser.add_argument("--max-queries", type=int, help="queries per language: a fixed-seed subset of item ids, the same ids in every language of a parallel set (full candidate pools kept)")
    parser.add_argument("--num-layers", type=int, help="keep only the first N transformer layers")
    parser.add_argument(
        "--train-layers", type=int,
        help="split of a partially fine-tuned model: its top K layers (read from a saved hybridir model by default); "
        "with --cache-dir the lower layers' hidden states are read from / written to the activation cache",
    )
    parser.add_argument("--cache-dir", type=Path, help="activation cache directory (needs --train-layers or a partially fine-tuned model)")
    parser.add_argument("--cache-max-gb", type=float, default=ModelConfig.model_fields["activation_cache_max_gb"].default)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-query-length", type=int, default=ModelConfig.model_fields["max_query_length"].default)
    parser.add_argument("--max-passage-length", type=int, default=ModelConfig.model_fields["max_passage_length"].default)
    parser.add_argument("--output", type=Path, help="output directory (default results/eval/<model-slug>/<dataset>)")
    parser.add_argument("--save-embeddings", action="store_true", help="also write the embeddings with their ids")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-queries subset")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--device", default=None,
        help="where the model runs: cpu, cuda, cuda:N, ... (default: cuda if torch sees a GPU, else cpu)",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="bf16: bfloat16 autocast (embeddings pooled and normalised in fp32); fp32: exact",
    )
    args = parser.parse_args(argv)
    try:
        args.device = choose_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    # Everything that can be checked without data or model is checked here, before loading.
    if args.dataset not in list_eval_sets():
        parser.error(f"unknown --dataset {args.dataset!r}; choose from {list_eval_sets()}")
    if args.languages is not None:
        codes = [c.strip() for c in args.languages.split(",") if c.strip()]
        if not codes:
            parser.error("--languages is empty")
        try:
            args.languages = check_languages(args.dataset, codes, eval_set_languages(args.dataset))
        except ValueError as exc:
            parser.error(f"--languages: {exc}")
    for name in ("max_queries", "num_layers", "train_layers", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("max_query_length", "max_passage_length"):
        if getattr(args, name) < 8:
            parser.error(f"--{name.replace('_', '-')} must be >= 8, got {getattr(args, name)}")
    if args.cache_dir is not None and args.train_layers is None and _saved_train_layers(args.model) is None:
        parser.error(
            f"--cache-dir {args.cache_dir}: {args.model!r} is not a partially fine-tuned model; "
            "pass --train-layers K to cache what all but its top K layers compute"
        )
    if args.output is None:
        args.output = Path("results") / "eval" / model_slug(args.model, args.num_layers) / args.dataset
    return args


def choose_device(requested: str | None) -> torch.device:
    """``--device``: the one asked for (checked to exist), else cuda when torch sees a GPU, else cpu."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"--device {requested!r}: {exc}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: torch sees no CUDA GPU (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"--device {requested!r}: expected cpu, cuda[:N], mps or xpu")
    return device


def _per_language(result: EvaluationResult) -> pd.DataFrame:
    """One row per language: mono mAP, mean cross mAP out of / into it, multi mAP, rank distance."""
    frame = pd.DataFrame(index=pd.Index([], name="language"))
    multilingual = result.tables.get(MULTILINGUAL, pd.DataFrame())
    if MAP in result.tables:
        ap = result.tables[MAP]
        off_diagonal = ap.copy()
        for lang in set(ap.index) & set(ap.columns):
            off_diagonal.loc[lang, lang] = float("nan")
        frame = pd.DataFrame(
            {
                summary_key(MONO, MAP): pd.Series({l: ap.loc[l, l] for l in ap.index if l in ap.columns}, dtype=float),
                f"{summary_key(CROSS, MAP)}_out": off_diagonal.mean(axis=1),
                f"{summary_key(CROSS, MAP)}_in": off_diagonal.mean(axis=0),
            }
        )
    if len(multilingual):
        frame = frame.join(multilingual[[MAP, RANK_DISTANCE]].add_prefix(summary_key(MULTI, "")), how="outer")
    frame.index.name = "language"
    return frame


def write_lareqa(result: EvaluationResult, output: Path) -> None:
    for name, table in result.tables.items():
        if name == MULTILINGUAL:
            continue
        table.to_csv(output / f"matrix_{name.replace('@', '_at_')}.csv", float_format="%.6g")
    _per_language(result).to_csv(output / "per_language.csv", float_format="%.6g")
    if len(result.tables.get(MULTILINGUAL, ())):
        result.tables[MULTILINGUAL].to_csv(output / "multilingual.csv", float_format="%.6g")
    result.per_query.to_parquet(output / "per_query.parquet", index=False)


def write_bitext(result: EvaluationResult, output: Path) -> None:
    result.tables["pairs"].to_csv(output / "pairs.csv", index=False, float_format="%.6g")
    result.per_query.to_parquet(output / "per_query.parquet", index=False)


def format_summary(summary: dict) -> str:
    """A plain-text table of the headline numbers of a summary."""
    lines = [f"{summary.get(MODEL, '')} on {summary.get(DATASET, '')}"]
    settings = [s for s in SETTINGS if summary_key(s, MAP) in summary]
    if settings:
        metrics = [m for m in (MAP, "r@1", "r@10", "ndcg@10", "f1@1", "f1@10") if summary_key(settings[0], m) in summary]
        lines.append(f"{SETTING:<8}" + "".join(f"{m:>10}" for m in metrics) + f"{'cells':>8}{'queries':>9}")
        for s in settings:
            row = "".join(f"{summary[summary_key(s, m)]:>10.4f}" for m in metrics)
            lines.append(f"{s:<8}{row}{summary[n_cells_key(s)]:>8}{summary[n_queries_key(s)]:>9}")
    if RANK_DISTANCE in summary:
        lines.append(f"rank distance ({MULTI}): {summary[RANK_DISTANCE]:.2f} "
                     f"({summary['n_rank_distance_excluded']} single-relevant queries excluded)")  # fmt: skip
    for key in sorted(k for k in summary if k.startswith("accuracy")):
        lines.append(f"{key}: {summary[key]:.4f}")
    times = [f"{k[:-2]} {summary[k]:.1f} s" for k in ("load_s", "encode_s", "score_s") if k in summary]
    lines.append("wall time: " + ", ".join(times))
    return "\n".join(lines)


def _cache_summary(model) -> dict:
    if model.bottom is None or not model.bottom.cache_attached:
        return {}
    stats = model.bottom.cache_stats()
    return {"activation_cache_hits": stats["hits"], "activation_cache_misses": stats["misses"]}


def _saved_train_layers(model: str) -> int | None:
    """The top-K split recorded by a saved partially fine-tuned hybridir model, if any."""
    settings = Path(model).expanduser() / "biencoder.json"
    if not settings.is_file():
        return None
    return json.loads(settings.read_text()).get("train_layers")


def run(args: argparse.Namespace) -> dict:
    """Evaluate as parsed by :func:`parse_args`; returns the summary written to summary.json."""
    from hybridir.model import BiEncoder  # heavy import (transformers) only once arguments are valid

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    evaluator = build_evaluator(args.dataset, languages=args.languages, max_queries=args.max_queries, seed=args.seed)
    model = BiEncoder.from_config(ModelConfig(
        name=args.model, num_layers=args.num_layers, train_layers=args.train_layers,
        activation_cache=str(args.cache_dir) if args.cache_dir else None, activation_cache_max_gb=args.cache_max_gb,
    ))  # fmt: skip
    model.to(args.device)
    load_s = time.perf_counter() - start
    log.info("loaded %s and %s on %s in %.1f s", args.dataset, model.display_name, args.device, load_s)

    with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        result = evaluator(
            model,
            batch_size=args.batch_size,
            max_query_length=args.max_query_length,
            max_passage_length=args.max_passage_length,
            keep_embeddings=args.save_embeddings,
        )
    args.output.mkdir(parents=True, exist_ok=True)
    (write_bitext if result.kind == "bitext" else write_lareqa)(result, args.output)
    summary = dict(result.summary)
    if args.save_embeddings:
        result.encoded.save(args.output / "embeddings")
    summary.update(
        load_s=load_s,
        model_arg=args.model,
        num_layers=args.num_layers,
        train_layers=model.train_layers,
        activation_cache=str(args.cache_dir) if args.cache_dir else None,
        **_cache_summary(model),
        languages=sorted(evaluator.corpus.languages),
        max_queries=args.max_queries,
        seed=args.seed,
        n_query_texts=result.info["n_query_texts"],
        n_candidate_texts=result.info["n_candidate_texts"],
        torch_threads=torch.get_num_threads(),
        device=str(args.device),
        precision=args.precision,
    )
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    summary = run(args)
    print(format_summary(summary))
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
