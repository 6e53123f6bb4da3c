"""The training loop on real NTREX pairs with a tiny random-init encoder.

Determinism, exact resume after an interruption, callbacks and checkpoints, the optimizer
setup, config checks on resume, DDP (2 gloo processes) against a single process, and the CLI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from hybridir.collate import collate_pairs
from hybridir.config import TrainConfig
from hybridir.data.ntrex import load_ntrex
from hybridir.model import BiEncoder
from hybridir.train import TrainCallback, build_optimizer, config_from_args, main, train

LANGUAGES = ["en", "de", "es"]


@pytest.fixture(scope="module")
def pairs():
    return load_ntrex(languages=LANGUAGES)


def make_config(model_dir, **overrides) -> TrainConfig:
    raw = {
        "data": {"languages": LANGUAGES, "max_pairs_per_language": 300, "validation_fraction": 0.1},
        "batching": {"batch_size": 8, "mode": "hybrid", "alpha": 0.5},
        "model": {"name": str(model_dir), "max_query_length": 32, "max_passage_length": 48},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "max_steps": 6,
        "log_every": 2,  # + forced logs at checkpoints: steps 2, 3, 4, 6
        "checkpoint_every": 3,
        "seed": 7,
        "num_threads": 1,
    }
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (raw[section] if section else raw)[leaf] = value
    return TrainConfig.model_validate(raw)


class Recorder(TrainCallback):
    def __init__(self, stop_after_checkpoint: int | None = None, evaluate: bool = False):
        self.logs, self.checkpoints, self.evaluations = {}, [], []
        self.stop_after_checkpoint, self.evaluate = stop_after_checkpoint, evaluate

    def on_log(self, step, metrics):
        self.logs[step] = dict(metrics)

    def on_checkpoint(self, step, directory, metrics):
        self.checkpoints.append((step, directory, dict(metrics)))
        if step == self.stop_after_checkpoint:
            raise KeyboardInterrupt  # simulates the run being killed right after the checkpoint

    def on_evaluate(self, step, model):
        self.evaluations.append(step)
        assert isinstance(model, BiEncoder)  # the unwrapped model, never DDP
        return {"probe_norm": float(model.encode(["hallo welt"], "query").norm())} if self.evaluate else None

    def losses(self):
        return {step: m["loss"] for step, m in self.logs.items()}


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def straight_run(tiny_encoder_dir, pairs, tmp_path_factory):
    recorder = Recorder(evaluate=True)
    config = make_config(tiny_encoder_dir, eval_every=2)
    result = train(config, tmp_path_factory.mktemp("straight"), callbacks=[recorder], pairs=pairs)
    return config, result, recorder


def test_callbacks_metrics_and_checkpoint_layout(straight_run):
    config, result, recorder = straight_run
    assert sorted(recorder.logs) == [2, 3, 4, 6]
    for metrics in recorder.logs.values():
        assert {"loss", "lr", "pairs_per_s", "tokens_per_s", "elapsed_s", "xx_share_so_far", "epoch", "val_loss"} <= set(metrics)
        assert metrics["loss"] > 0 and metrics["val_loss"] > 0 and metrics["tokens_per_s"] > metrics["pairs_per_s"] > 0
        assert 0.0 <= metrics["xx_share_so_far"] <= 1.0
    # warmup 2 steps then linear decay to 0 at step 6 (the rate logged is the next step's)
    assert [round(recorder.logs[s]["lr"] / 1e-3, 4) for s in (2, 3, 4, 6)] == [1.0, 0.75, 0.5, 0.0]
    # on_evaluate every 2 steps, its dict in the report of the same step only
    assert recorder.evaluations == [2, 4, 6]
    assert [s for s, m in recorder.logs.items() if "probe_norm" in m] == [2, 4, 6]
    assert [step for step, _, _ in recorder.checkpoints] == [3, 6]
    assert result.step == 6 and result.metrics == recorder.logs[6]
    assert result.checkpoint_dir == recorder.checkpoints[-1][1] and result.model_dir == result.checkpoint_dir / "model"
    for name in ("trainer_state.pt", "train_config.json", "metrics.json", "model/model.safetensors",
                 "model/tokenizer.json", "model/biencoder.json"):  # fmt: skip
        assert (result.checkpoint_dir / name).is_file(), name
    state = torch.load(result.checkpoint_dir / "trainer_state.pt", weights_only=False)
    assert state["step"] == 6 and set(state["sampler"]) == {"epoch", "index"} and state["world_size"] == 1
    assert TrainConfig.model_validate_json((result.checkpoint_dir / "train_config.json").read_text()) == config
    lines = (result.checkpoint_dir.parent.parent / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 3, 4, 6]
    # the saved model is a working BiEncoder whose frozen word embeddings did not move
    trained = BiEncoder.load(result.model_dir)
    assert trained.encode(["ein Satz"], "query").shape == (1, 32)


def test_validate_every_thins_the_validation_loss_and_leaves_training_unchanged(straight_run, pairs, tmp_path):
    config, _, recorder = straight_run
    thinned = Recorder(evaluate=True)
    train(config.model_copy(update={"validate_every": 4}), tmp_path, callbacks=[thinned], pairs=pairs)
    assert sorted(thinned.logs) == [2, 3, 4, 6]  # the same logged steps
    assert [s for s, m in thinned.logs.items() if "val_loss" in m] == [4, 6]  # multiples of 4, and the last step
    assert {s: thinned.logs[s]["val_loss"] for s in (4, 6)} == {s: recorder.logs[s]["val_loss"] for s in (4, 6)}
    assert thinned.losses() == recorder.losses()  # validation draws nothing from the training run


def test_the_last_step_is_evaluated_where_eval_every_does_not_divide_max_steps(tiny_encoder_dir, pairs, tmp_path):
    # a study's cells that share a pair budget have different step counts: the last step's report
    # (always a checkpoint) must carry an evaluation in every cell
    recorder = Recorder(evaluate=True)
    config = make_config(tiny_encoder_dir, eval_every=4, checkpoint_every=4, max_steps=6, log_every=10)
    train(config, tmp_path / "run", callbacks=[recorder], pairs=pairs)
    assert recorder.evaluations == [4, 6]
    assert [step for step, _, _ in recorder.checkpoints] == [4, 6]
    assert all("probe_norm" in metrics for _, _, metrics in recorder.checkpoints)


def test_frozen_embeddings_stay_and_the_rest_trains(straight_run, tiny_encoder_dir):
    _, result, _ = straight_run
    before, after = weights(tiny_encoder_dir), weights(result.model_dir)
    embedding = next(name for name in before if name.endswith("word_embeddings.weight"))
    assert torch.equal(before[embedding], after[embedding])
    moved = [name for name in before if not torch.equal(before[name], after[name])]
    assert any("layer.1.attention" in name for name in moved) and any("LayerNorm" in name for name in moved)


def test_same_config_and_seed_give_identical_losses(straight_run, pairs, tmp_path):
    config, result, recorder = straight_run
    again = Recorder(evaluate=True)
    rerun = train(config, tmp_path, callbacks=[again], pairs=pairs)
    assert again.losses() == recorder.losses()
    assert [again.logs[s]["val_loss"] for s in again.logs] == [recorder.logs[s]["val_loss"] for s in recorder.logs]
    first, second = weights(result.model_dir), weights(rerun.model_dir)
    assert all(torch.equal(first[name], second[name]) for name in first)
    # a different seed draws other batches
    other = Recorder()
    train(make_config(config.model.name, seed=8, max_steps=2), tmp_path / "seed8", callbacks=[other], pairs=pairs)
    assert other.losses()[2] != recorder.losses()[2]


def test_resume_after_interruption_gives_the_uninterrupted_numbers(straight_run, pairs, tmp_path):
    config, result, recorder = straight_run
    interrupted = Recorder(stop_after_checkpoint=3, evaluate=True)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, callbacks=[interrupted], pairs=pairs)
    assert sorted(interrupted.logs) == [2, 3]

    resumed = Recorder(evaluate=True)
    final = train(config, tmp_path, resume_from=tmp_path / "checkpoints/step_000003", callbacks=[resumed], pairs=pairs)
    assert sorted(resumed.logs) == [4, 6] and final.step == 6
    straight = recorder.losses()
    assert {**interrupted.losses(), **resumed.losses()} == straight
    assert resumed.logs[6]["xx_share_so_far"] == recorder.logs[6]["xx_share_so_far"]
    assert resumed.logs[6]["lr"] == recorder.logs[6]["lr"]
    first, second = weights(result.model_dir), weights(final.model_dir)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_resume_checks_the_checkpoint_and_config_before_training(straight_run, pairs, tmp_path):
    config, result, _ = straight_run
    checkpoint = result.checkpoint_dir.parent / "step_000003"
    changed = config.model_copy(update={"batching": config.batching.model_copy(update={"alpha": 0.9})})
    with pytest.raises(ValueError, match=r"differs in \['batching.alpha'\]"):
        train(changed, tmp_path, resume_from=checkpoint, pairs=pairs)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        train(config, tmp_path, resume_from=tmp_path, pairs=pairs)


def test_optimizer_groups_skip_frozen_and_decay_only_matrices(tiny_encoder_dir):
    config = make_config(tiny_encoder_dir)
    model = BiEncoder.from_config(config.model)
    model.freeze_embeddings()
    decay, no_decay = build_optimizer(model, config).param_groups
    assert decay["weight_decay"] == config.optim.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    optimized = {id(p) for group in (decay, no_decay) for p in group["params"]}
    assert id(model.encoder.embeddings.word_embeddings.weight) not in optimized
    assert len(optimized) == sum(p.requires_grad for p in model.parameters())


def test_collate_uses_dynamic_padding_and_counts_real_tokens(tiny_encoder_dir, pairs):
    from hybridir.batching import PairRef

    model = BiEncoder.from_config(make_config(tiny_encoder_dir).model)
    refs = [PairRef(0, "en", "de"), PairRef(5, "es", "es")]
    batch = collate_pairs(refs, pairs, model, 64, 256)
    assert batch.num_pairs == 2
    assert batch.queries["input_ids"].shape[1] == int(batch.queries["attention_mask"].sum(1).max()) < 64
    expected = sum(len(model.tokenizer(t)["input_ids"]) for t in (pairs.queries["en"][0], pairs.queries["es"][5]))
    assert int(batch.queries["attention_mask"].sum()) == expected
    assert batch.num_tokens == int(batch.queries["attention_mask"].sum() + batch.passages["attention_mask"].sum())
    with pytest.raises(ValueError, match="missing"):
        collate_pairs([PairRef(0, "fr", "fr")], pairs, model)


# ---------------------------------------------------------------------- DDP
def _ddp_train_worker(rank: int, port: int, config_json: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        recorder = Recorder()
        config = TrainConfig.model_validate_json(config_json)
        result = train(config, out_dir, callbacks=[recorder], pairs=load_ntrex(languages=LANGUAGES))
        torch.save({"losses": recorder.losses(), "checkpoints": [s for s, _, _ in recorder.checkpoints],
                    "dir": str(result.checkpoint_dir)}, f"{out_dir}/rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_ddp_on_two_processes_matches_a_single_process(tmp_path, pairs):
    from conftest import build_tiny_encoder_dir

    # without dropout both runs compute the same function, so they must agree step by step
    model_dir = build_tiny_encoder_dir(tmp_path / "tiny-no-dropout", dropout=0.0)
    config = make_config(model_dir, max_steps=3, checkpoint_every=0)
    single = Recorder()
    single_result = train(config, tmp_path / "single", callbacks=[single], pairs=pairs)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_train_worker, args=(port, config.model_dump_json(), str(tmp_path / "ddp")), nprocs=2, join=True)

    ranks = [torch.load(tmp_path / f"ddp/rank{r}.pt") for r in range(2)]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the global-batch loss, on every rank
    assert ranks[0]["checkpoints"] == ranks[1]["checkpoints"] == [3]
    for step, loss in single.losses().items():
        assert ranks[0]["losses"][step] == pytest.approx(loss, rel=1e-5)
    single_weights, ddp_weights = weights(single_result.model_dir), weights(tmp_path / "ddp/checkpoints/step_000003/model")
    for name, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], value, rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------- command line
def test_config_overrides_parse_yaml_values_and_name_bad_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {lr: 0.001}\nbatching: {mode: xx}\n")
    config = config_from_args(str(path), ["optim.warmup_steps=3", "data.languages=[en, de]", "max_steps=9"])
    assert (config.optim.lr, config.optim.warmup_steps, config.max_steps) == (0.001, 3, 9)
    assert config.data.languages == ["en", "de"] and config.batching.mode == "xx"
    with pytest.raises(ValueError, match="key=value"):
        config_from_args(None, ["max_steps"])
    with pytest.raises(ValueError, match="optim.lrr"):
        config_from_args(None, ["optim.lrr=1"])


def test_command_line_runs_a_short_training(tiny_encoder_dir, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(make_config(tiny_encoder_dir, max_steps=2, checkpoint_every=0).model_dump_json())
    command = [sys.executable, "-m", "hybridir.train", "--config", str(path), "--set", "log_every=2",
               "--set", "batching.mode=xx", "--output", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert summary["step"] == 2 and summary["metrics"]["xx_share_so_far"] == 1.0
    assert (tmp_path / "out/checkpoints/step_000002/model/model.safetensors").is_file()


def test_command_line_rejects_a_bad_value_before_training(tmp_path, capsys):
    assert main(["--set", "optim.lr=-1", "--output", str(tmp_path)]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# --- partial fine-tuning with the activation cache ------------------------------------------
@pytest.fixture(scope="module")
def tiny4_dir(tmp_path_factory):
    from conftest import build_tiny_encoder_dir

    return build_tiny_encoder_dir(tmp_path_factory.mktemp("tiny4-train"), num_layers=4)


def test_partial_fine_tuning_is_the_same_run_cold_warm_and_uncached(tiny4_dir, pairs, tmp_path):
    cache = tmp_path / "cache"
    runs = {}
    for name, cache_dir in (("uncached", None), ("cold", cache), ("warm", cache)):
        recorder = Recorder()
        config = make_config(tiny4_dir, **{"model.train_layers": 2, "model.activation_cache": str(cache_dir) if cache_dir else None})
        result = train(config, tmp_path / name, callbacks=[recorder], pairs=pairs)
        runs[name] = (recorder, result)
    losses = {name: recorder.losses() for name, (recorder, _) in runs.items()}
    assert losses["uncached"].keys() == losses["cold"].keys() == {2, 3, 4, 6}
    for step, loss in losses["uncached"].items():
        assert losses["cold"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert losses["warm"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    # the warm run reads every frozen state from disk; the cold run computed (most of) them
    assert runs["warm"][0].logs[6]["activation_cache_hit_rate"] == 1.0
    assert runs["cold"][0].logs[6]["activation_cache_hit_rate"] < 1.0
    assert "activation_cache_hit_rate" not in runs["uncached"][0].logs[6]
    # the compute cost (hybridir.flops): the trained top 2 of 4 layers cost the same in every run;
    # uncached, the frozen bottom 2 run forward on the same padded tensors (1 / 3 of the top's
    # forward + backward each); warm, every frozen state is read from disk and costs nothing
    flops = {name: recorder.logs[6]["cost/flops"] for name, (recorder, _) in runs.items()}
    trained = {name: recorder.logs[6]["cost/flops_trained"] for name, (recorder, _) in runs.items()}
    assert trained["uncached"] > 0 and trained["cold"] == trained["warm"] == trained["uncached"]
    assert flops["uncached"] == pytest.approx(trained["uncached"] * (1 + 2 / 6), rel=1e-12)
    assert flops["warm"] == trained["warm"] < flops["cold"] < flops["uncached"]
    cpu = [recorder.logs[step]["cost/cpu_s"] for step in (2, 4, 6) for recorder, _ in [runs["uncached"]]]
    assert 0 < cpu[0] < cpu[1] < cpu[2]  # cumulative process CPU seconds of the steps
    # the checkpoint is slim: only the top 2 layers are written, and they moved
    model_dir = runs["warm"][1].model_dir
    assert not (model_dir / "model.safetensors").exists()
    before, after = weights(tiny4_dir), load_file(str(model_dir / "trainable.safetensors"))
    assert after and all(name.startswith(("encoder.layer.2.", "encoder.layer.3.")) for name in after)
    assert all(not torch.equal(before[name], after[name]) for name in after if name.endswith(".weight"))
    # loaded back, the frozen bottom is bit-identical to the start and the top is the trained one
    reloaded = BiEncoder.load(model_dir)
    assert reloaded.train_layers == 2
    state = reloaded.encoder.state_dict()
    assert all(torch.equal(state[name], before[name]) for name in before if not name.startswith(("encoder.layer.2.", "encoder.layer.3.")))
    assert all(torch.equal(state[name], after[name]) for name in after)


def test_partial_fine_tuning_resumes_exactly_with_another_cache_dir(tiny4_dir, pairs, tmp_path):
    config = make_config(tiny4_dir, **{"model.train_layers": 2, "model.activation_cache": str(tmp_path / "a")})
    straight = Recorder()
    train(config, tmp_path / "straight", callbacks=[straight], pairs=pairs)
    interrupted = Recorder(stop_after_checkpoint=3)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", callbacks=[interrupted], pairs=pairs)
    resumed = Recorder()
    moved_cache = config.model_copy(update={"model": config.model.model_copy(update={"activation_cache": str(tmp_path / "b")})})
    train(moved_cache, tmp_path / "cut", resume_from=interrupted.checkpoints[-1][1], callbacks=[resumed], pairs=pairs)
    assert resumed.losses()[6] == pytest.approx(straight.losses()[6], rel=1e-5)
    # the trained layers' FLOPs continue across the resume (Progress carries them)
    assert resumed.logs[6]["cost/flops_trained"] == pytest.approx(straight.logs[6]["cost/flops_trained"], rel=1e-12)


# ---------------------------------------------------------------------- reports under a GPU's process group
def _one_rank_group(backend: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def _window_and_optimizer():
    from hybridir.train import _Window

    window = _Window()
    window.add(torch.tensor(1.5), 4, 10)
    return window, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_report_reduces_on_the_training_device_under_a_group_without_a_cpu_backend():
    # Issue 18 fix 2: a GPU trial's group is NCCL-only, and the report all-reduced a CPU tensor
    # ("No backend type associated with device type cpu"). A "meta:gloo" group has the same
    # restriction, with `meta` playing the GPU.
    from hybridir.checkpoint import Progress
    from hybridir.train import _report, _sum_over_ranks

    _one_rank_group("meta:gloo")
    try:
        with pytest.raises(RuntimeError, match="device type cpu"):
            dist.all_reduce(torch.zeros(1))  # the group refuses host tensors, as NCCL does
        total = _sum_over_ranks(10.0, torch.device("meta"))  # the reduction runs on the device
        assert total.device.type == "meta"
        window, optimizer = _window_and_optimizer()
        with pytest.raises(RuntimeError, match="device type cpu"):  # reducing on the host fails there
            _report(1, window, Progress(step=1), optimizer, 10, world_size=2, device=torch.device("cpu"))
        with pytest.raises(RuntimeError, match="meta tensor"):  # reduced on the device; only the read-back of
            _report(1, window, Progress(step=1), optimizer, 10, world_size=2, device=torch.device("meta"))  # a fake device fails
    finally:
        dist.destroy_process_group()


def test_report_sums_tokens_over_the_group_on_the_training_device():
    from hybridir.checkpoint import Progress
    from hybridir.train import _report

    _one_rank_group("gloo")
    try:
        window, optimizer = _window_and_optimizer()
        metrics = _report(1, window, Progress(step=1), optimizer, 10, world_size=2, device=torch.device("cpu"))
    finally:
        dist.destroy_process_group()
    assert metrics["tokens_per_s"] * metrics["s_per_step"] == pytest.approx(10.0)
    assert (metrics["cost/flops"], metrics["cost/flops_trained"], metrics["cost/cpu_s"]) == (0.0, 0.0, 0.0)
    assert metrics["loss"] == pytest.approx(1.5)


def test_the_run_says_where_its_time_went(straight_run):
    from hybridir.timing import TRAIN_PHASES

    _, result, _ = straight_run
    phases = result.phase_seconds
    assert set(phases) == set(TRAIN_PHASES)  # this run evaluates, validates, checkpoints and reports
    assert all(seconds >= 0.0 for seconds in phases.values())
    assert phases["steps"] > 0 and phases["checkpoint_write"] > 0 and phases["intermediate_eval"] > 0
    # steps exclude the other phases: never more than the loop's own clock at its last report
    assert phases["steps"] <= result.metrics["elapsed_s"] + 0.5


# ---------------------------------------------------------------------- input pipeline (issue 18 speed)
def test_prefetcher_keeps_order_and_raises_where_the_source_fails():
    from hybridir.train import Prefetcher

    assert list(Prefetcher(iter(range(50)), depth=3)) == list(range(50))
    assert list(Prefetcher(iter(range(5)), depth=0)) == list(range(5))

    def broken():
        yield 1
        yield 2
        raise ValueError("batch 3 refers to a missing pair")

    got = Prefetcher(broken(), depth=2)
    assert [next(got), next(got)] == [1, 2]
    with pytest.raises(ValueError, match="batch 3"):
        next(got)
    endless = Prefetcher(iter(lambda: 0, 1), depth=2)  # never ends: close() must stop its thread
    next(endless)
    endless.close()
    assert not endless._thread.is_alive()


def test_batches_prepared_ahead_give_the_same_run(straight_run, pairs, tmp_path, monkeypatch):
    # What the GPU path does (tokenisation in a background thread) must not change any number.
    import hybridir.train as train_module

    config, result, recorder = straight_run
    monkeypatch.setattr(train_module, "PREFETCH_BATCHES", {"cpu": 2})
    ahead = Recorder(evaluate=True)
    other = train(config, tmp_path / "ahead", callbacks=[ahead], pairs=pairs)
    assert ahead.losses() == recorder.losses()
    for name, value in weights(result.model_dir).items():
        assert torch.equal(weights(other.model_dir)[name], value), name


def test_optimizer_is_fused_only_on_cuda(tiny_encoder_dir):
    model = BiEncoder.from_config(make_config(tiny_encoder_dir).model)
    assert not build_optimizer(model, make_config(tiny_encoder_dir)).defaults.get("fused")
