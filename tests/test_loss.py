"""InfoNCE: the formula, and DDP gathering that reproduces the single-process gradient exactly."""

from __future__ import annotations

import gc
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformers import BertConfig, BertModel

from hybridir.loss import InfoNCELoss
from hybridir.model import BiEncoder, PairEncoder

GLOBAL_BATCH = 8
WORLD_SIZE = 2


def test_loss_is_cross_entropy_against_the_diagonal():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(5, 16), dim=-1)
    p = F.normalize(torch.randn(5, 16), dim=-1)
    scores = q @ p.T / 0.05
    expected = -torch.log_softmax(scores, dim=1).diagonal().mean()
    torch.testing.assert_close(InfoNCELoss(0.05)(q, p), expected)
    # lower temperature sharpens: with matching pairs the loss goes to zero
    assert InfoNCELoss(0.01)(q, q) < InfoNCELoss(1.0)(q, q)
    assert InfoNCELoss(0.01)(q, q).item() < 1e-3


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        InfoNCELoss()(torch.zeros(4, 8), torch.zeros(3, 8))


def _tiny_bi_encoder() -> BiEncoder:
    # dropout off: the single-process and the DDP run must compute the same function
    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return BiEncoder(BertModel(config, add_pooling_layer=False), tokenizer=None, pooling="mean")


def _global_inputs() -> tuple[dict, dict]:
    """Queries and passages of different padded lengths, with real padding inside."""
    generator = torch.Generator().manual_seed(1)

    def inputs(length: int) -> dict:
        ids = torch.randint(3, 100, (GLOBAL_BATCH, length), generator=generator)
        lengths = torch.randint(2, length + 1, (GLOBAL_BATCH,), generator=generator)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids * mask, "attention_mask": mask}

    return inputs(7), inputs(11)


def _gradients(model: BiEncoder) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _ddp_step(rank: int) -> dict:
    model = _tiny_bi_encoder()
    ddp = DistributedDataParallel(PairEncoder(model))
    queries, passages = _global_inputs()
    share = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
    q, p = ddp({k: v[share] for k, v in queries.items()}, {k: v[share] for k, v in passages.items()})
    loss = InfoNCELoss(0.05)(q, p)
    loss.backward()
    return {"loss": loss.detach() / WORLD_SIZE, "grads": _gradients(model)}


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    # The DDP wrapper (its Reducer) is freed before destroy_process_group: holding the last
    # reference to the gloo group, its dealloc would destroy the group with the GIL held while
    # gloo's worker thread waits for the GIL to free a finished all-reduce (a deadlock, seen as
    # a hung test).
    try:
        result = _ddp_step(rank)
        gc.collect()
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_gradient_equals_single_process_gradient_on_the_global_batch(tmp_path):
    model = _tiny_bi_encoder()
    queries, passages = _global_inputs()
    loss = InfoNCELoss(0.05)(*PairEncoder(model)(queries, passages))
    loss.backward()
    expected = _gradients(model)

    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["loss"], loss.detach())
        assert result["grads"].keys() == expected.keys()
        for name, grad in expected.items():
            assert grad.abs().sum() > 0, name  # every parameter really receives gradient
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
