"""hybridir.flops: the FLOP formula against a hand count and against torch's own FLOP counter
on a tiny real transformer layer."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from hybridir.flops import BACKWARD_FACTOR, LayerShape, TrainingFlops, padded_work
from hybridir.frozen import encoder_layers, run_layers


def test_hand_count_of_one_layer():
    shape = LayerShape(hidden=8, intermediate=16)
    # q, k, v, o: 4 x 8 x 8 = 256 weights; feed-forward 8 x 16 + 16 x 8 = 256
    assert shape.matmul_params == 512
    # 2 sequences of 3 padded tokens: 6 tokens, squared lengths 2 x 9 = 18
    assert padded_work((2, 3)) == (6, 18)
    # matmuls 2 x 512 x 6 = 6144; attention scores and weighted sum 4 x 8 x 18 = 576
    assert shape.forward_flops(6, 18) == 6720
    flops = TrainingFlops(shape, num_layers=3, trained_layers=1)
    assert flops.frozen_layers == 2
    assert flops.trained(6, 18) == 3 * 6720  # forward + backward (2 x forward)
    assert flops.frozen(6, 18) == 2 * 6720  # two frozen layers, forward only
    assert BACKWARD_FACTOR == 2.0


def test_bad_trained_layers_is_an_error():
    with pytest.raises(ValueError, match="trained_layers=5"):
        TrainingFlops(LayerShape(8, 16), num_layers=4, trained_layers=5)


def _tiny_bert():
    config = BertConfig(hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                        vocab_size=50, attn_implementation="eager")
    return config, BertModel(config).eval()


def test_matmul_params_are_the_layers_linear_weights():
    config, model = _tiny_bert()
    layer = encoder_layers(model)[0]
    weights = sum(module.weight.numel() for module in layer.modules() if isinstance(module, torch.nn.Linear))
    assert LayerShape.of(config).matmul_params == weights == 4 * 16 * 16 + 2 * 16 * 40


def test_formula_matches_torchs_flop_counter_forward_and_backward():
    # eager attention: its Q K^T and weights x V are bmm calls the counter sees (CPU sdpa is not counted)
    config, model = _tiny_bert()
    shape = LayerShape.of(config)
    rows, length = 3, 7
    hidden = torch.randn(rows, length, 16, requires_grad=True)
    mask = torch.ones(rows, length, dtype=torch.long)
    with FlopCounterMode(display=False) as forward:
        out = run_layers(model, hidden, mask, encoder_layers(model)[:2])
    assert forward.get_total_flops() == 2 * shape.forward_flops(*padded_work((rows, length)))
    with FlopCounterMode(display=False) as backward:
        out.sum().backward()
    assert backward.get_total_flops() == BACKWARD_FACTOR * forward.get_total_flops()
