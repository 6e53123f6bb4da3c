"""Benchmark 3: XQuAD-R evaluation, hybridir vs a naive per-language-pair evaluation and vs
sentence-transformers' encode of the same texts.

    python bench/evaluation.py                                   # en,th, 50 questions, 2 layers
    python bench/evaluation.py --languages all --max-queries 0 --layers 12 --no-naive   # full XQuAD-R

* hybridir: ``encode_corpus`` (each distinct text once, length-sorted batches) then
  ``evaluate_lareqa`` (mono + cross + multi, mAP over the full ranking, rank distance).
  A forward pre-hook counts the rows that really go through the encoder.
* naive: the straightforward loop: for every LAReQA cell (mono X-X, cross X-Y, multi X-all)
  encode that cell's queries and candidate pool with ``BiEncoder.encode`` (input-order
  batches), then score the cell with the same metric code.
* sentence-transformers: ``SentenceTransformer.encode`` (which also length-sorts) of exactly
  the distinct query and candidate texts hybridir encoded, same prompts, batch size, max
  length (512) and threads. hybridir and ST run alternately (the order is swapped on repeats).

Candidate pools are always complete (subset_corpus samples questions only), so rankings are
as hard as on the full set.
"""

from __future__ import annotations

import argparse
import time

from _common import (
    add_common_args, device, median, offline_model_dir, print_machine, print_table, sentence_transformer,
    set_threads, timer,
)  # fmt: skip

import numpy as np
import torch

from hybridir.config import ModelConfig
from hybridir.data.registry import load_eval_set
from hybridir.evaluation import encode_corpus, evaluate_lareqa, subset_corpus
from hybridir.evaluation.encode import EmbeddingTable, EncodedCorpus
from hybridir.evaluation.lareqa import rank_against
from hybridir.evaluation.metrics import per_query_metrics
from hybridir.model import BiEncoder


class RowCounter:
    """Counts the texts that pass through the encoder's forward."""

    def __init__(self, model: BiEncoder):
        self.rows = 0
        model.encoder.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += int(ids.shape[0])


def naive_evaluation(model: BiEncoder, corpus, batch_size: int) -> tuple[float, float, float]:
    """Encode per cell, score per cell; returns (encode_s, score_s, multi mAP)."""
    langs = corpus.languages
    cells = [("mono", x, [x]) for x in langs]
    cells += [("cross", x, [y]) for x in langs for y in langs if x != y]
    cells += [("multi", x, list(langs)) for x in langs]
    encode_s = score_s = 0.0
    multi_ap = []
    for setting, x, pool_langs in cells:
        start = time.perf_counter()
        qids = list(corpus.queries[x])
        queries = {x: EmbeddingTable(qids, model.encode([corpus.queries[x][q] for q in qids], "query", batch_size).numpy())}
        candidates = {}
        for y in pool_langs:
            cids = list(corpus.candidates[y])
            texts = [corpus.candidates[y][c] for c in cids]
            candidates[y] = EmbeddingTable(cids, model.encode(texts, "passage", batch_size).numpy())
        encoded = EncodedCorpus(corpus.name, queries, candidates, corpus.relevant)
        encode_s += time.perf_counter() - start
        start = time.perf_counter()
        block = rank_against(encoded, x, pool_langs)
        if block is not None:
            metrics = per_query_metrics(block[1], (1, 10))
            if setting == "multi":
                multi_ap.append(float(np.mean(metrics["ap"])))
        score_s += time.perf_counter() - start
    return encode_s, score_s, float(np.mean(multi_ap))


def distinct_texts(by_lang: dict[str, dict[str, str]]) -> list[str]:
    return list(dict.fromkeys(t for items in by_lang.values() for t in items.values()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.set_defaults(layers=2)
    parser.add_argument("--languages", default="en,th", help="comma-separated XQuAD-R languages, or 'all'")
    parser.add_argument("--max-queries", type=int, default=50, help="questions per language (0: all 1190)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="hybridir / ST encode repeats (order alternates)")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive per-pair evaluation")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    dev = device()
    print_machine(args.threads)

    languages = None if args.languages == "all" else args.languages.split(",")
    corpus = load_eval_set("xquad-r", languages=languages)
    if args.max_queries:
        corpus = subset_corpus(corpus, max_queries=args.max_queries, seed=0)
    model = BiEncoder.from_config(ModelConfig(name="me5-small-offline", num_layers=args.layers)).to(dev)
    counter = RowCounter(model)
    st_model = sentence_transformer(offline_model_dir(), args.layers, 512, 512, dev)
    st_model.eval()
    query_texts, candidate_texts = distinct_texts(corpus.queries), distinct_texts(corpus.candidates)
    n_texts = len(query_texts) + len(candidate_texts)

    ours_encode, ours_score, st_encode = [], [], []
    cpu = {"encode": [], "score": [], "st": []}
    latest: dict = {}  # the last run's outputs of each side

    def run_ours():
        counter.rows = 0
        with timer(dev, [], cpu["encode"]):
            encoded = encode_corpus(model, corpus, batch_size=args.batch_size)
        with timer(dev, [], cpu["score"]):
            result = evaluate_lareqa(encoded)
        ours_encode.append(result.summary["encode_s"])
        ours_score.append(result.summary["score_s"])
        latest.update(summary=result.summary, encoded=encoded, rows=counter.rows)

    def run_st():
        with timer(dev, st_encode, cpu["st"]):
            st_model.encode(query_texts, prompt="query: ", batch_size=args.batch_size, convert_to_numpy=True)
            c = st_model.encode(candidate_texts, prompt="passage: ", batch_size=args.batch_size, convert_to_numpy=True)
        latest.update(st_candidates=c)

    for repeat in range(args.repeats):
        for run in (run_ours, run_st) if repeat % 2 == 0 else (run_st, run_ours):
            run()
    summary, encoded = latest["summary"], latest["encoded"]
    # Same model, same inputs: the embeddings must agree up to float rounding.
    first_cand = encoded.candidates[corpus.languages[0]]
    st_row = candidate_texts.index(corpus.candidates[corpus.languages[0]][first_cand.ids[0]])
    agreement = float(first_cand.vectors[0] @ latest["st_candidates"][st_row])

    e, s, t = median(ours_encode), median(ours_score), median(st_encode)
    ec, sc, tc = median(cpu["encode"]), median(cpu["score"]), median(cpu["st"])
    title = (f"XQuAD-R evaluation: {len(corpus.languages)} languages ({','.join(corpus.languages)}), "
             f"{summary['n_mono_queries'] // len(corpus.languages)} questions/language, full candidate pools, "
             f"{args.layers or 12} layers, batch {args.batch_size}; medians of {args.repeats} runs")  # fmt: skip
    rows = [
        ["hybridir encode_corpus", e, ec, n_texts / e, latest["rows"], n_texts, ""],
        ["hybridir evaluate_lareqa (mono+cross+multi)", s, sc, "", "", "",
         f"{100 * s / e:.1f}% of encode wall, {100 * sc / ec:.1f}% of its CPU"],
        ["sentence-transformers encode (same texts)", t, tc, n_texts / t, "", n_texts, f"cos(ours, ST) {agreement:.5f}"],
        ["throughput ratio hybridir / ST (target >= 1)", t / e, tc / ec, "", "", "", "= ST seconds / hybridir seconds"],
    ]
    if args.naive:
        counter.rows = 0
        naive_wall, naive_cpu = [], []
        with timer(dev, naive_wall, naive_cpu):
            naive_e, naive_s, naive_multi = naive_evaluation(model, corpus, args.batch_size)
        rows.append(["naive per-pair evaluation (encode + score)", naive_wall[0], naive_cpu[0], counter.rows / naive_e,
                     counter.rows, n_texts, f"multi mAP {naive_multi:.4f} vs {summary['multi_map']:.4f}"])  # fmt: skip
        rows.append(["ratio hybridir (encode + score) / naive", (e + s) / naive_wall[0], (ec + sc) / naive_cpu[0],
                     "", "", "", ""])  # fmt: skip
    print_table(title, ["path", "wall s", "CPU s", "texts/s (wall)", "texts encoded", "distinct texts", "note"], rows)
    print(f"mono mAP {summary['mono_map']:.4f}  cross mAP {summary['cross_map']:.4f}  "
          f"multi mAP {summary['multi_map']:.4f}  rank distance {summary['rank_distance']:.2f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
