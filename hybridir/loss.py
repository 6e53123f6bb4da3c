"""InfoNCE with in-batch negatives, over the global batch when training with DDP.

Row i of the batch is a (query, passage) pair; every other passage of the batch is a
negative for query i (Henderson et al. 2017; sentence-transformers' MultipleNegativesRankingLoss).

Under DDP each rank encodes only its share of the global batch. To keep the negatives of
the global batch, each rank gathers the query and passage embeddings of all ranks
(``all_gather`` carries no gradient), puts its own tensors back into their slot (so gradients
flow through the local part) and computes the loss over the whole global batch. The loss is
then multiplied by ``world_size``: each rank's gradient holds only its local examples'
contribution to the global-batch gradient, DDP averages the ranks (divides their sum by
world_size), so the factor makes the averaged gradient equal to the single-process gradient
of the global batch. Divide the returned value by :func:`world_size` to log the loss itself.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def world_size() -> int:
    """Number of processes in the current process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_keep_local_grad(local: Tensor) -> Tensor:
    """Concatenate ``local`` from every rank in rank order; only this rank's rows carry grad.

    Every rank must pass the same shape (HybridBatchSampler gives equal local batches).
    """
    if world_size() == 1:
        return local
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local.detach().contiguous())
    gathered[dist.get_rank()] = local
    return torch.cat(gathered, dim=0)


class InfoNCELoss(nn.Module):
    """Cross-entropy of each query against all passages of the (global) batch.

    ``scores = q @ p.T / temperature``; the target of query i is passage i. Embeddings are
    expected L2-normalised (so scores are cosines / temperature).
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, query_embeddings: Tensor, passage_embeddings: Tensor) -> Tensor:
        if query_embeddings.shape != passage_embeddings.shape:
            raise ValueError(
                f"query and passage embeddings differ in shape: "
                f"{tuple(query_embeddings.shape)} vs {tuple(passage_embeddings.shape)}"
            )
        queries = gather_keep_local_grad(query_embeddings)
        passages = gather_keep_local_grad(passage_embeddings)
        # Scores in float32 even under bf16 autocast: the softmax over 1/temperature-scaled
        # cosines is sensitive to rounding.
        with torch.autocast(device_type=queries.device.type, enabled=False):
            scores = queries.float() @ passages.float().T / self.temperature
            targets = torch.arange(scores.shape[0], device=scores.device)
            loss = F.cross_entropy(scores, targets)
        return loss * world_size()
