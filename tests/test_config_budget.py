"""The training budget in pairs (``max_pairs``, ``optim.warmup_pairs``): steps x batch size held
constant across batch sizes, with errors naming the fields when it cannot be."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hybridir.config import TrainConfig


@pytest.mark.parametrize(("batch", "steps", "warmup"), [(8, 96, 8), (16, 48, 4), (32, 24, 2), (64, 12, 1)])
def test_pairs_budget_sets_steps_and_warmup(batch, steps, warmup):
    config = TrainConfig.model_validate({"max_pairs": 768, "optim": {"warmup_pairs": 64},
                                         "batching": {"batch_size": batch}})
    assert (config.max_steps, config.optim.warmup_steps) == (steps, warmup)
    assert config.max_steps * config.batching.batch_size == 768
    # written out and read back (a trial's config travels as JSON): both fields, consistent
    again = TrainConfig.model_validate(config.model_dump(mode="json"))
    assert again == config


def test_a_budget_that_is_not_whole_batches_is_an_error():
    with pytest.raises(ValidationError, match=r"max_pairs=100 is not a whole number of batches of batching.batch_size=16"):
        TrainConfig.model_validate({"max_pairs": 100, "batching": {"batch_size": 16}})
    with pytest.raises(ValidationError, match=r"optim.warmup_pairs=40 is not a whole number .*batch_size=16"):
        TrainConfig.model_validate({"max_pairs": 160, "optim": {"warmup_pairs": 40}, "batching": {"batch_size": 16}})


def test_steps_given_beside_the_budget_must_agree():
    assert TrainConfig.model_validate({"max_pairs": 160, "max_steps": 10, "batching": {"batch_size": 16}}).max_steps == 10
    with pytest.raises(ValidationError, match=r"max_steps=20 contradicts max_pairs=160 at batching.batch_size=16 "
                                              r"\(160 / 16 = 10 steps\)"):
        TrainConfig.model_validate({"max_pairs": 160, "max_steps": 20, "batching": {"batch_size": 16}})
    with pytest.raises(ValidationError, match=r"optim.warmup_steps=3 contradicts optim.warmup_pairs=32"):
        TrainConfig.model_validate({"max_pairs": 160, "optim": {"warmup_pairs": 32, "warmup_steps": 3},
                                    "batching": {"batch_size": 16}})


def test_without_a_budget_nothing_changes():
    config = TrainConfig.model_validate({"max_steps": 7, "optim": {"warmup_steps": 2}})
    assert (config.max_steps, config.max_pairs, config.optim.warmup_steps, config.optim.warmup_pairs) == (7, None, 2, None)
    # the default batch size applies when the batching section is left out
    assert TrainConfig.model_validate({"max_pairs": 64}).max_steps == 64 // TrainConfig().batching.batch_size


def test_warmup_longer_than_the_budget_is_an_error():
    with pytest.raises(ValidationError, match="warmup_steps=4 exceeds max_steps=2"):
        TrainConfig.model_validate({"max_pairs": 32, "optim": {"warmup_pairs": 64}, "batching": {"batch_size": 16}})
