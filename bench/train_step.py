"""Benchmark 1: one training step, hybridir vs sentence-transformers' MultipleNegativesRankingLoss.

    python bench/train_step.py                      # 2 layers, batch 16, 16 timed steps per side
    python bench/train_step.py --layers 2 --steps 10 --batch-size 32 --no-freeze

Both sides train their own copy of the same offline multilingual-e5-small (Q4_0-dequantized)
on the SAME (query, passage) text pairs, drawn by hybridir's HybridBatchSampler from NTREX-128,
with the same prefixes ("query: " / "passage: "), max lengths, temperature (MNRL scale =
1 / temperature), AdamW settings, grad clipping, frozen-embedding setting and threads.

* hybridir side: the body of hybridir.train.train's loop (collate_pairs with dynamic padding
  -> PairEncoder forward -> InfoNCELoss -> backward -> clip -> AdamW -> scheduler), built from
  the same functions train() uses.
* baseline side: what SentenceTransformerTrainer does per step: its data collator
  (model.preprocess with prompts and per-task max lengths) -> MNRL(features) -> backward ->
  clip -> AdamW -> scheduler.

Steps alternate (which side goes first alternates too), warm-up steps are excluded, and the
table reports medians and ratio = hybridir / baseline. Last, hybridir.train.train() itself runs
the same configuration and its own s_per_step is printed as a check that the replicated step
is what the real loop costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import (
    add_common_args, autocast, device, median, offline_model_dir, print_machine, print_table,
    sentence_transformer, set_threads, st_word_embeddings, timer,
)  # fmt: skip

import torch
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from hybridir.batching import HybridBatchSampler, TrainingPool
from hybridir.collate import collate_pairs, pair_texts
from hybridir.config import TrainConfig
from hybridir.data.registry import load_train_source
from hybridir.data.splits import split_by_group
from hybridir.loss import InfoNCELoss
from hybridir.model import BiEncoder, PairEncoder
from hybridir.train import build_optimizer, build_scheduler, seed_everything, train


def make_config(args) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {
            "name": "me5-small-offline", "num_layers": args.layers, "freeze_embeddings": args.freeze,
            "max_query_length": args.max_query_length, "max_passage_length": args.max_passage_length,
        },
        "data": {"source": "ntrex", "num_languages": args.languages, "validation_fraction": 0.0},
        "batching": {"mode": "hybrid", "alpha": 0.5, "batch_size": args.batch_size},
        "max_steps": args.warmup + args.steps, "num_threads": args.threads, "log_every": args.warmup + args.steps,
        "optim": {"lr": 2e-5, "warmup_steps": 0},
    })  # fmt: skip


class HybridirStep:
    """The loop body of hybridir.train.train (single process)."""

    def __init__(self, config: TrainConfig, pairs, dev: torch.device):
        self.config, self.pairs, self.dev = config, pairs, dev
        self.model = BiEncoder.from_config(config.model)
        if config.model.freeze_embeddings:
            self.model.freeze_embeddings()
        self.model.to(dev).train()
        self.encoder = PairEncoder(self.model)
        self.loss_fn = InfoNCELoss(self.model.temperature)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def __call__(self, refs) -> float:
        m = self.config.model
        batch = collate_pairs(refs, self.pairs, self.model, m.max_query_length, m.max_passage_length).to(self.dev)
        with autocast(self.dev):
            queries, passages = self.encoder(batch.queries, batch.passages)
        loss = self.loss_fn(queries, passages)
        return optimizer_step(self, loss)


def optimizer_step(side, loss: torch.Tensor) -> float:
    """The part both sides share: backward, clip, AdamW, schedule (as in hybridir.train)."""
    side.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(side.trainable, side.config.optim.max_grad_norm)
    side.optimizer.step()
    side.scheduler.step()
    return float(loss.detach())


class SentenceTransformersStep:
    """One SentenceTransformerTrainer step: collator -> MNRL -> backward -> clip -> AdamW."""

    def __init__(self, config: TrainConfig, pairs, dev: torch.device, model_dir):
        m = config.model
        self.pairs, self.dev, self.config = pairs, dev, config
        self.model = sentence_transformer(model_dir, m.num_layers, m.max_query_length, m.max_passage_length, dev)
        if m.freeze_embeddings:
            st_word_embeddings(self.model).weight.requires_grad_(False)
        self.model.train()
        self.loss_fn = MultipleNegativesRankingLoss(self.model, scale=1.0 / m.temperature)
        self.collator = SentenceTransformerDataCollator(
            preprocess_fn=self.model.preprocess,
            prompts={"query": "query: ", "passage": "passage: "},
            router_mapping={"query": "query", "passage": "document"},  # -> query_length / document_length
        )
        # hybridir's own AdamW grouping (decay on matrices only) and schedule: only the loop differs.
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def __call__(self, refs) -> float:
        queries, passages = pair_texts(refs, self.pairs)
        inputs = self.collator([{"query": q, "passage": p} for q, p in zip(queries, passages)])
        features = [
            {k[len(prefix):]: v.to(self.dev) if torch.is_tensor(v) else v for k, v in inputs.items() if k.startswith(prefix)}
            for prefix in ("query_", "passage_")
        ]  # fmt: skip  (SentenceTransformerTrainer.collect_features)
        with autocast(self.dev):
            loss = self.loss_fn(features, labels=None)
        return optimizer_step(self, loss)


class _Collect:
    """A TrainCallback that keeps every report of the loop."""

    def __init__(self):
        self.reports: list[dict] = []

    def on_log(self, step, metrics):
        self.reports.append(metrics)

    def on_checkpoint(self, *args):
        pass

    def on_evaluate(self, *args):
        return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.set_defaults(layers=2)
    parser.add_argument("--steps", type=int, default=16, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    parser.add_argument("--languages", type=int, default=5, help="first N NTREX languages")
    parser.add_argument("--max-query-length", type=int, default=64)
    parser.add_argument("--max-passage-length", type=int, default=192)
    parser.add_argument("--no-freeze", dest="freeze", action="store_false", help="train the word embeddings too")
    parser.add_argument("--skip-loop-check", action="store_true", help="do not run hybridir.train.train afterwards")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    dev = device()
    config = make_config(args)
    print_machine(args.threads)

    pairs = load_train_source("ntrex")
    train_pairs, _ = split_by_group(pairs, config.data.validation_fraction, config.data.split_seed)
    pool = TrainingPool.from_config(train_pairs, config.data)
    sampler = HybridBatchSampler.from_config(pool, config.batching, config.seed)
    seed_everything(config.seed)
    ours = HybridirStep(config, train_pairs, dev)
    baseline = SentenceTransformersStep(config, train_pairs, dev, offline_model_dir())

    times: dict[str, list[float]] = {"hybridir": [], "sentence-transformers": []}
    cpu_times: dict[str, list[float]] = {"hybridir": [], "sentence-transformers": []}
    losses: dict[str, list[float]] = {"hybridir": [], "sentence-transformers": []}
    batches = sampler.iterate()
    for step in range(args.warmup + args.steps):
        _, _, refs = next(batches)
        order = [("hybridir", ours), ("sentence-transformers", baseline)]
        for name, side in order if step % 2 == 0 else order[::-1]:
            spent, spent_cpu = [], []
            with timer(dev, spent, spent_cpu):
                losses[name].append(side(refs))
            if step >= args.warmup:
                times[name].append(spent[0])
                cpu_times[name].append(spent_cpu[0])
        print(f"step {step + 1}/{args.warmup + args.steps}: "
              + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items() if t), flush=True)
    # Same texts, same model, same lengths: the losses must agree (they are the same objective).
    first_gap = abs(losses["hybridir"][0] - losses["sentence-transformers"][0])

    h, s = median(times["hybridir"]), median(times["sentence-transformers"])
    hc, sc = median(cpu_times["hybridir"]), median(cpu_times["sentence-transformers"])
    title = (f"training step, batch {args.batch_size}, {args.layers or 12} layers, "
             f"{'frozen' if args.freeze else 'trainable'} embeddings, max lengths "
             f"{args.max_query_length}/{args.max_passage_length}, {args.steps} timed steps each")  # fmt: skip
    print_table(
        title,
        ["side", "median wall s/step", "mean wall s/step", "median CPU s/step", "pairs/s (wall)", "first-step loss"],
        [
            ["hybridir", h, sum(times["hybridir"]) / args.steps, hc, args.batch_size / h, losses["hybridir"][0]],
            ["sentence-transformers MNRL", s, sum(times["sentence-transformers"]) / args.steps, sc, args.batch_size / s,
             losses["sentence-transformers"][0]],
            ["ratio hybridir / ST", h / s, sum(times["hybridir"]) / sum(times["sentence-transformers"]), hc / sc, "",
             f"|diff| {first_gap:.2e} (dropout)"],
        ],
    )  # fmt: skip

    if not args.skip_loop_check:
        callback = _Collect()
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            train(config.model_copy(update={"log_every": args.warmup}), out, callbacks=[callback], pairs=pairs)
            wall = time.perf_counter() - started
        # The first report covers the warm-up steps; weight the others by their step counts.
        later = callback.reports[1:]
        steps = [b["step"] - a["step"] for a, b in zip(callback.reports, later)]
        loop_s_per_step = sum(r["s_per_step"] * n for r, n in zip(later, steps)) / sum(steps)
        print_table(
            "check: hybridir.train.train() on the same config (its own timer, steps after warm-up)",
            ["s_per_step (train loop)", "replicated step median", "train() wall incl. set-up, s"],
            [[loop_s_per_step, h, wall]],
        )


if __name__ == "__main__":
    main()
