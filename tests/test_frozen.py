"""Partial fine-tuning with the activation cache is exact.

The reference is the plain Hugging Face forward of the whole encoder with the embeddings and
lower layers frozen (eval mode, no gradients): the cached path must give the same embeddings,
the same loss and the same gradients for the trainable top (fp32 on CPU, 1e-5), cold and warm,
in one process and under 2-process DDP.
"""

from __future__ import annotations

import gc
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from conftest import build_tiny_encoder_dir
from test_loss import _free_port
from hybridir.config import ModelConfig
from hybridir.frozen import encoder_layers
from hybridir.loss import InfoNCELoss
from hybridir.model import BiEncoder, PairEncoder

NUM_LAYERS, TRAIN_LAYERS = 4, 2
QUERIES = ["Wer schrieb den Faust?", "Where is the Eiffel tower?", "猫はどこ?", "Как дела?"]
PASSAGES = [
    "Goethe schrieb den Faust in zwei Teilen.",
    "The Eiffel tower stands in Paris, on the Champ de Mars, since 1889.",
    "猫は台所で寝ている。",
    "Всё хорошо, спасибо, а у тебя как дела сегодня?",
]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return build_tiny_encoder_dir(tmp_path_factory.mktemp("tiny4"), num_layers=NUM_LAYERS, dropout=0.1)


@pytest.fixture(scope="module")
def encoder_dir_no_dropout(tmp_path_factory):
    return build_tiny_encoder_dir(tmp_path_factory.mktemp("tiny4-nodrop"), num_layers=NUM_LAYERS, dropout=0.0)


def _partial(directory, cache=None) -> BiEncoder:
    return BiEncoder.from_config(ModelConfig(name=str(directory), train_layers=TRAIN_LAYERS, activation_cache=cache))


def _reference(directory) -> BiEncoder:
    """The whole model, frozen by hand: HF's own forward, bottom in eval mode."""
    model = BiEncoder.from_config(ModelConfig(name=str(directory)))
    bottom = [model.encoder.embeddings, *encoder_layers(model.encoder)[: NUM_LAYERS - TRAIN_LAYERS]]
    for module in bottom:
        module.requires_grad_(False)
    model.train()
    for module in bottom:
        module.eval()
    return model


def _step(model: BiEncoder, seed: int = 0):
    """Loss and top-layer gradients of one training step (dropout drawn from ``seed``)."""
    model.zero_grad(set_to_none=True)
    queries, passages = model.tokenize(QUERIES, "query"), model.tokenize(PASSAGES, "passage")
    torch.manual_seed(seed)
    q, p = PairEncoder(model)(queries, passages)
    loss = InfoNCELoss(0.05)(q, p)
    loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return q.detach(), p.detach(), loss.detach(), grads


def test_only_the_top_layers_train_and_the_bottom_never_drops_out(encoder_dir):
    model = _partial(encoder_dir).train()
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all(name.startswith(("encoder.encoder.layer.2.", "encoder.encoder.layer.3.")) for name in trainable)
    assert not model.encoder.embeddings.training and not encoder_layers(model.encoder)[1].training
    assert encoder_layers(model.encoder)[2].training
    assert "top 2 of 4 layers fine-tuned" in model.training_description
    with pytest.raises(ValueError, match="train_layers=5.*4 transformer layers"):
        BiEncoder.from_config(ModelConfig(name=str(encoder_dir), train_layers=5))


@pytest.mark.parametrize("cached", [False, True])
def test_embeddings_loss_and_gradients_equal_the_frozen_full_model(encoder_dir, tmp_path, cached):
    reference = _step(_reference(encoder_dir))
    model = _partial(encoder_dir, cache=str(tmp_path / "cache") if cached else None).train()
    for attempt in ("cold", "warm"):
        q, p, loss, grads = _step(model)
        torch.testing.assert_close(q, reference[0], **TOLERANCE, msg=attempt)
        torch.testing.assert_close(p, reference[1], **TOLERANCE, msg=attempt)
        torch.testing.assert_close(loss, reference[2], **TOLERANCE, msg=attempt)
        assert grads.keys() == reference[3].keys()
        for name, grad in reference[3].items():
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(grads[name], grad, **TOLERANCE, msg=f"{attempt} {name}")
        model.flush_activation_cache()
    if cached:
        stats = model.bottom.cache_stats()
        assert stats["misses"] == len(QUERIES) + len(PASSAGES)  # cold: computed once ...
        assert stats["hits"] == len(QUERIES) + len(PASSAGES)  # ... warm: read back


def test_a_new_process_reuses_the_cache_of_an_untrained_bottom(encoder_dir, tmp_path):
    cache = str(tmp_path / "cache")
    first = _partial(encoder_dir, cache).eval()
    with torch.no_grad():
        expected = first(**first.tokenize(PASSAGES, "passage"))
    first.flush_activation_cache()
    # a trained checkpoint keeps its bottom: same fingerprint, same namespace, warm cache
    trained = _partial(encoder_dir)
    with torch.no_grad():
        for param in encoder_layers(trained.encoder)[3].parameters():
            param.add_(0.01)
    trained.save(tmp_path / "ckpt")
    reloaded = BiEncoder.from_config(ModelConfig(name=str(tmp_path / "ckpt"), activation_cache=cache)).eval()
    assert reloaded.train_layers == TRAIN_LAYERS
    assert reloaded.bottom.fingerprint() == first.bottom.fingerprint()
    with torch.no_grad():
        got = reloaded(**reloaded.tokenize(PASSAGES, "passage"))
    assert reloaded.bottom.cache_stats() == {"hits": 4, "misses": 0, "written": 0, "corrupt": 0}
    assert not torch.allclose(got, expected)  # its top did change
    # a different bottom gets a different namespace, never the other model's states
    other = _partial(encoder_dir)
    with torch.no_grad():
        other.encoder.embeddings.word_embeddings.weight[5].add_(1.0)
    assert other.bottom.fingerprint() != first.bottom.fingerprint()


def test_padding_of_the_cached_batch_does_not_leak_into_embeddings(encoder_dir, tmp_path):
    model = _partial(encoder_dir, str(tmp_path / "cache")).eval()
    with torch.no_grad():
        together = model(**model.tokenize(PASSAGES, "passage"))
        model.flush_activation_cache()
        alone = torch.cat([model(**model.tokenize([text], "passage")) for text in PASSAGES])
    torch.testing.assert_close(together, alone, **TOLERANCE)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(len(PASSAGES)))


WORLD_SIZE = 2


def _ddp_steps(rank: int, directory: str, cache: str) -> dict:
    model = _partial(directory, cache).train()
    ddp = DistributedDataParallel(PairEncoder(model))
    queries, passages = model.tokenize(QUERIES, "query"), model.tokenize(PASSAGES, "passage")
    share = slice(rank * len(QUERIES) // WORLD_SIZE, (rank + 1) * len(QUERIES) // WORLD_SIZE)
    results = []
    for _ in ("cold", "warm"):
        model.zero_grad(set_to_none=True)
        q, p = ddp({k: v[share] for k, v in queries.items()}, {k: v[share] for k, v in passages.items()})
        loss = InfoNCELoss(0.05)(q, p)
        loss.backward()
        grads = {n: t.grad.clone() for n, t in model.named_parameters() if t.grad is not None}
        results.append({"loss": loss.detach() / WORLD_SIZE, "grads": grads})
        model.flush_activation_cache()
        dist.barrier()  # the other rank's shard is on disk before the warm step
    return {"results": results, "stats": model.bottom.cache_stats()}


def _ddp_worker(rank: int, port: int, directory: str, cache: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    # The DDP wrapper (its Reducer) is freed before destroy_process_group: holding the last
    # reference to the gloo group, its dealloc would destroy the group with the GIL held while
    # gloo's worker thread waits for the GIL to free a finished all-reduce (a deadlock, seen as
    # a hung test).
    try:
        result = _ddp_steps(rank, directory, cache)
        gc.collect()
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_with_a_shared_cache_gives_the_single_process_gradient(encoder_dir_no_dropout, tmp_path):
    # No dropout anywhere: DDP ranks draw different masks than one process would.
    _, _, loss, expected = _step(_reference(encoder_dir_no_dropout))
    cache = str(tmp_path / "cache")
    mp.spawn(_ddp_worker, args=(_free_port(), str(encoder_dir_no_dropout), cache, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        for attempt, result in zip(("cold", "warm"), saved["results"]):
            torch.testing.assert_close(result["loss"], loss, **TOLERANCE, msg=attempt)
            assert result["grads"].keys() == expected.keys()
            for name, grad in expected.items():
                torch.testing.assert_close(result["grads"][name], grad, **TOLERANCE, msg=f"rank {rank} {attempt} {name}")
        # each rank computed its own share once, then read it back from disk
        assert saved["stats"]["misses"] == len(QUERIES) and saved["stats"]["hits"] == len(QUERIES)
    assert len(list((tmp_path / "cache").rglob("shard-*.safetensors"))) == WORLD_SIZE


def test_f_normalize_reference_sanity(encoder_dir):
    # The reference really is HF's forward: pooled by hand it equals BiEncoder without a split.
    model = BiEncoder.from_config(ModelConfig(name=str(encoder_dir))).eval()
    batch = model.tokenize(PASSAGES, "passage")
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        torch.testing.assert_close(model(**batch), pooled)



class _Elsewhere(torch.Tensor):
    """A cache entry that lives on another device than the model, as host memory does for a
    model on a GPU. Like CUDA, any op that mixes it with the model's tensors fails; ops among
    such entries stay there, and ``.to(<the model's device>)`` gives back a plain tensor."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # results are not re-wrapped

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype, device="meta")

    def __init__(self, inner: torch.Tensor):
        self.inner = inner

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = [x for x in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.to):  # .to() (aten.to in inference mode)
            device = kwargs.get("device", next((a for a in args if isinstance(a, torch.device)), None))
            if device is not None and torch.device(device).type != "meta":
                return args[0].inner.to(device=device, dtype=kwargs.get("dtype")).clone()
        if not all(isinstance(x, _Elsewhere) for x in leaves):
            raise RuntimeError(f"{func}: Expected all tensors to be on the same device, but found at least two devices")
        unwrap = lambda x: x.inner if isinstance(x, _Elsewhere) else x  # noqa: E731
        out = func(*torch.utils._pytree.tree_map(unwrap, args), **torch.utils._pytree.tree_map(unwrap, kwargs))
        return torch.utils._pytree.tree_map(lambda x: _Elsewhere(x) if isinstance(x, torch.Tensor) else x, out)


def _entries_elsewhere(model: BiEncoder) -> None:
    """Make the model's activation cache hand out its entries on another device (a fake GPU run)."""
    make = model.bottom._cache

    def cache(precision):
        found = make(precision)
        if not hasattr(found, "_plain_get_many"):
            found._plain_get_many = found.get_many
            found.get_many = lambda keys: [None if v is None else _Elsewhere(v) for v in found._plain_get_many(keys)]
        return found

    model.bottom._cache = cache


def test_cached_entries_on_another_device_join_freshly_computed_states(encoder_dir, tmp_path):
    # Issue 18: step 2 of every partial fine-tuning on CUDA crashed in torch.cat, mixing cached
    # host entries with freshly computed CUDA states ("Expected all tensors to be on the same device").
    reference = _partial(encoder_dir).eval()
    model = _partial(encoder_dir, str(tmp_path / "cache")).eval()
    _entries_elsewhere(model)
    first = model.tokenize(QUERIES[:2], "query")
    both = model.tokenize(QUERIES, "query")
    with torch.no_grad():
        model(**first)  # cold: everything computed
        mixed = model(**both)  # 2 cached entries (elsewhere) + 2 computed here
        warm = model(**both)  # all cached
        expected = reference(**both)
    assert not isinstance(mixed, _Elsewhere) and mixed.device == expected.device
    torch.testing.assert_close(mixed, expected, **TOLERANCE)
    torch.testing.assert_close(warm, expected, **TOLERANCE)
    assert model.bottom.cache_stats()["hits"] == 2 + 4


def test_evaluation_with_cached_entries_on_another_device(encoder_dir, tmp_path):
    # The final evaluation of a trial with a cache attached takes the same path.
    from hybridir.evaluation.encode import encode_texts

    reference = encode_texts(_partial(encoder_dir), PASSAGES, "passage", batch_size=4)
    model = _partial(encoder_dir, str(tmp_path / "cache"))
    _entries_elsewhere(model)
    encode_texts(model, PASSAGES[:2], "passage", batch_size=2)
    vectors = encode_texts(model, PASSAGES, "passage", batch_size=4)  # hits and misses in one batch
    torch.testing.assert_close(torch.from_numpy(vectors), torch.from_numpy(reference), **TOLERANCE)
    assert model.bottom.cache_stats()["hits"] == 2
