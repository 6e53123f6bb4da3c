"""Issue 18 item 5: validation loss rose (2.79 -> 3.03) while training loss fell. Overfitting or a
validation defect? Reproduce the run's configuration on CPU and look at it from several sides.

Configuration of the GPU run: full fine-tuning of the offline mE5-small (all 12 layers), NTREX,
5 languages, hybrid batches of 64 pairs, lr 5e-5, 60 steps. Here: fp32 on CPU (the GPU ran bf16),
everything else the library's defaults (``model.freeze_embeddings`` true, alpha 0.5, linear
schedule, validation_fraction 0.1, temperature 0.05).

Every ``--every`` steps (and before the first step, on the pretrained weights) the callback
measures, with the model in eval mode:

* ``val_loss``: the library's own validation loss (the 4 fixed held-out batches of train.py);
* ``train_subset_loss``: the same computation on 4 batches drawn the same way from the
  TRAINING documents: if it falls while ``val_loss`` rises, the same code gives both numbers and
  the gap is generalisation (overfitting), not a defect of the validation computation;
* ``val_top1`` / ``train_subset_top1``: in-batch top-1 accuracy (query -> its passage among the
  batch's passages) on those batches;
* ``*_false_negatives_per_query``: in-batch passages that contain the query's own sentence (an NTREX
  passage is the query's neighbouring lines, so a neighbour's passage holds the query sentence),
  and ``*_loss_without_false_negatives``: the query->passage cross-entropy with those masked;
* ``heldout_*``: retrieval over ALL held-out items (first ``--heldout-languages`` languages) (no batch composition involved): query in
  language X -> passage in language Y among every held-out passage of Y, accuracy@1 and mean
  reciprocal rank averaged over the ordered language pairs, and the mean cosine of the positive
  pairs and of the hardest negative;
* once: how many distinct documents (NTREX articles) a training and a validation batch hold.

    python bench/gpu_val_loss.py --out results/bench/gpu_val_loss.json
    python bench/gpu_val_loss.py --pack .gpu-pack --out $OUT/gpu_val_loss.json   # GPU machine, full depth: ~1 min

Prints one JSON line per evaluation and writes them all to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridir.batching import HybridBatchSampler, TrainingPool  # noqa: E402
from hybridir.collate import collate_pairs  # noqa: E402
from hybridir.config import BatchConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from hybridir.data.splits import split_by_group  # noqa: E402
from hybridir.loss import InfoNCELoss  # noqa: E402
from hybridir.model import BiEncoder  # noqa: E402
from hybridir.train import VALIDATION_BATCHES, TrainCallback, _validation_batches, train  # noqa: E402


def run_config(args) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(source="ntrex", num_languages=args.languages),
        batching=BatchConfig(batch_size=args.batch_size),
        model=ModelConfig(name=args.model, num_layers=args.num_layers),
        optim=OptimConfig(lr=args.lr),
        max_steps=args.steps,
        log_every=args.log_every,
        eval_every=args.every,
        precision="fp32",
        seed=args.seed,
        num_threads=args.threads,
    )


class Probe(TrainCallback):
    def __init__(self, config: TrainConfig, pairs, out: list[dict], heldout_languages: int = 2):
        self.config = config
        self.heldout_languages = heldout_languages
        self.train_pairs, self.val_pairs = split_by_group(pairs, config.data.validation_fraction, config.data.split_seed)
        pool = TrainingPool.from_config(self.train_pairs, config.data)
        self.languages = pool.languages
        self.val_batches = _validation_batches(self.val_pairs, self.languages, config, 0, 1)
        # Same sampler as training but another seed: batches the run may or may not have seen yet.
        sampler = HybridBatchSampler.from_config(pool, config.batching, config.seed + 1, 0, 1)
        self.train_batches = [sampler.local_batch(0, i) for i in range(VALIDATION_BATCHES)]
        self.loss = InfoNCELoss(0.05)
        self.out = out
        docs = lambda batches, pairs: [len({pairs.groups[r.item] for r in b}) for b in batches]  # noqa: E731
        self.composition = {
            "train_batch_documents": docs(self.train_batches, self.train_pairs),
            "val_batch_documents": docs(self.val_batches, self.val_pairs),
            "train_documents": len(set(self.train_pairs.groups)),
            "val_documents": len(set(self.val_pairs.groups)),
            "train_items": len(self.train_pairs),
            "val_items": len(self.val_pairs),
            "train_batch_false_negatives_per_query": [float(self.false_negatives(b, self.train_pairs).sum(1).float().mean())
                                                      for b in self.train_batches],
            "val_batch_false_negatives_per_query": [float(self.false_negatives(b, self.val_pairs).sum(1).float().mean())
                                                    for b in self.val_batches],
        }  # fmt: skip

    @staticmethod
    def false_negatives(refs, pairs) -> torch.Tensor:
        """[n, n] bool: passage j (j != i) contains query i's sentence (a window neighbour of the
        same document). Lines are parallel, so the English side decides for every language pair."""
        lang = "en" if "en" in pairs.queries else pairs.languages[0]
        queries = [pairs.queries[lang][r.item] for r in refs]
        passages = [pairs.passages[lang][r.item] for r in refs]
        n = len(refs)
        return torch.tensor([[i != j and queries[i] in passages[j] for j in range(n)] for i in range(n)])

    @torch.no_grad()
    def _batch_metrics(self, model, batches, pairs) -> dict[str, float]:
        losses, masked, top1, fn_rows = [], [], [], []
        for refs in batches:
            batch = collate_pairs(refs, pairs, model, self.config.model.max_query_length, self.config.model.max_passage_length)
            q, p = model(**batch.queries), model(**batch.passages)
            losses.append(float(self.loss(q, p)))
            scores = q @ p.T / self.loss.temperature
            false = self.false_negatives(refs, pairs)
            targets = torch.arange(len(refs))
            masked.append(float(torch.nn.functional.cross_entropy(scores.masked_fill(false, float("-inf")), targets)))
            top1.append(float((scores.argmax(1) == targets).float().mean()))
            fn_rows.append(float(false.sum(1).float().mean()))
        return {"loss": float(np.mean(losses)), "loss_without_false_negatives": float(np.mean(masked)),
                "top1": float(np.mean(top1)), "false_negatives_per_query": float(np.mean(fn_rows))}  # fmt: skip

    @torch.no_grad()
    def _heldout(self, model) -> dict:
        vp, langs = self.val_pairs, self.languages[: self.heldout_languages]
        q = {l: model.encode(vp.queries[l], "query", batch_size=64, max_length=self.config.model.max_query_length) for l in langs}
        p = {l: model.encode(vp.passages[l], "passage", batch_size=64, max_length=self.config.model.max_passage_length) for l in langs}
        acc, mrr, pos, neg = [], [], [], []
        for lq in langs:
            for lp in langs:
                scores = q[lq] @ p[lp].T
                positive = scores.diagonal()
                rank = (scores > positive[:, None]).sum(1) + 1
                acc.append(float((rank == 1).float().mean()))
                mrr.append(float((1.0 / rank.float()).mean()))
                pos.append(float(positive.mean()))
                neg.append(float(scores.fill_diagonal_(-2).max(1).values.mean()))
        return {"heldout_acc1": float(np.mean(acc)), "heldout_mrr": float(np.mean(mrr)),
                "heldout_pos_cos": float(np.mean(pos)), "heldout_hardest_neg_cos": float(np.mean(neg))}  # fmt: skip

    def measure(self, step: int, model) -> dict:
        was = model.training
        model.eval()
        started = time.perf_counter()
        row = {"step": step}
        row.update({f"val_{k}": v for k, v in self._batch_metrics(model, self.val_batches, self.val_pairs).items()})
        row.update({f"train_subset_{k}": v for k, v in self._batch_metrics(model, self.train_batches, self.train_pairs).items()})
        row.update(self._heldout(model))
        row["probe_s"] = time.perf_counter() - started
        model.train(was)
        print(json.dumps(row), flush=True)
        self.out.append(row)
        return {}

    def on_evaluate(self, step: int, model) -> dict | None:
        return self.measure(step, model)

    def on_log(self, step: int, metrics: dict) -> None:
        keep = {k: metrics[k] for k in ("step", "loss", "val_loss", "s_per_step") if k in metrics}
        print(json.dumps({"train_log": keep}), flush=True)
        self.out.append({"train_log": keep})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="me5-small-offline")
    parser.add_argument("--num-layers", type=int)
    parser.add_argument("--languages", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=20, help="probe every N steps")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--heldout-languages", type=int, default=2, help="first N training languages in the held-out retrieval")
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/gpu_val_loss_run"))
    parser.add_argument("--out", type=Path, default=Path("results/bench/gpu_val_loss.json"))
    parser.add_argument("--probe-only", action="store_true", help="measure the pretrained weights only (no training)")
    parser.add_argument("--pack", type=Path, help="read texts and model from a GPU-check pack (.gpu-pack) instead of "
                        "the data mirror and the offline-model cache (the GPU machine has neither)")
    args = parser.parse_args(argv)
    if args.pack is not None:  # on the GPU machine: texts and the reduced model from bench/gpu_check.sh pack
        from gpu_pack import pack_model_and_pairs

        args.model, pairs = pack_model_and_pairs(args.pack)
    else:
        from hybridir.data.registry import load_train_source

        pairs = load_train_source("ntrex")
    config = run_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    probe = Probe(config, pairs, rows, args.heldout_languages)
    print(json.dumps({"config": config.model_dump(), **probe.composition}), flush=True)
    probe.measure(0, BiEncoder.from_config(config.model))  # the pretrained weights, before step 1
    if not args.probe_only:
        train(config, args.output_dir, callbacks=[probe], pairs=pairs, keep_checkpoints=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": config.model_dump(), "composition": probe.composition, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
