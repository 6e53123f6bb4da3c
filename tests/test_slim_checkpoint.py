"""Slim checkpoints under partial fine-tuning: only the weights that train are written; the
frozen rest is rebuilt from the base model and checked against its fingerprint.

A checkpoint of the full model under ``train_layers`` wrote hundreds of MB of weights that
never change (issue 20). These tests pin what replaces it: the size, exact reloading (the same
embeddings as the model in memory), refusal of a base whose frozen weights differ, loading
through ``model.name``, and a full export from a slim checkpoint.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hybridir.config import ModelConfig
from hybridir.model import TRAINABLE_FILE, BiEncoder, ModelNotAvailableError

TEXTS = ["hallo welt", "the cat sat on the mat", "¿dónde está la biblioteca?"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from conftest import build_tiny_encoder_dir

    return build_tiny_encoder_dir(tmp_path_factory.mktemp("slim-base"), num_layers=4)


def trained(base_dir, train_layers=2) -> BiEncoder:
    model = BiEncoder.from_config(ModelConfig(name=str(base_dir), train_layers=train_layers))
    torch.manual_seed(0)
    with torch.no_grad():  # what training does: only parameters that require gradients move
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def test_slim_save_holds_only_the_trained_layers_and_reloads_exactly(base_dir, tmp_path):
    model = trained(base_dir)
    slim, full = model.save(tmp_path / "slim", slim=True), model.save(tmp_path / "full")
    assert not (slim / "model.safetensors").exists() and (slim / TRAINABLE_FILE).is_file()
    keys = set(load_file(str(slim / TRAINABLE_FILE)))
    assert keys and all(key.startswith(("encoder.layer.2.", "encoder.layer.3.")) for key in keys)
    assert {key for key in model.encoder.state_dict() if key.startswith(("encoder.layer.2.", "encoder.layer.3."))} == keys
    ratio = (slim / TRAINABLE_FILE).stat().st_size / (full / "model.safetensors").stat().st_size
    # the tiny encoder's 250k-row embedding matrix dominates, as in mE5-small
    assert ratio < 0.10, ratio
    for directory in (slim, full):
        reloaded = BiEncoder.load(directory).eval()
        assert reloaded.train_layers == 2
        for kind in ("query", "passage"):
            assert torch.equal(reloaded.encode(TEXTS, kind), model.encode(TEXTS, kind))
    # a slim save of a reloaded slim save is the same file (it keeps pointing at the base)
    again = BiEncoder.load(slim).save(tmp_path / "again", slim=True)
    assert (again / TRAINABLE_FILE).read_bytes() == (slim / TRAINABLE_FILE).read_bytes()


def test_a_slim_save_refuses_a_base_whose_frozen_weights_changed(base_dir, tmp_path):
    moved_base = shutil.copytree(base_dir, tmp_path / "base")
    model = trained(moved_base)
    slim = model.save(tmp_path / "slim", slim=True)
    weights = load_file(str(moved_base / "model.safetensors"))
    weights["embeddings.word_embeddings.weight"][5] += 1e-3  # one row of a frozen matrix
    save_file(weights, str(moved_base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelNotAvailableError, match=r"frozen 2 layers and embeddings.*not\s+the ones it was trained on"):
        BiEncoder.load(slim)


def test_a_change_in_the_trained_top_of_the_base_is_not_a_mismatch(base_dir, tmp_path):
    # Only the frozen part is referenced: the base's top layers are replaced by the saved ones.
    moved_base = shutil.copytree(base_dir, tmp_path / "base")
    model = trained(moved_base)
    slim = model.save(tmp_path / "slim", slim=True)
    weights = load_file(str(moved_base / "model.safetensors"))
    weights["encoder.layer.3.output.dense.weight"] += 1.0
    save_file(weights, str(moved_base / "model.safetensors"), metadata={"format": "pt"})
    assert torch.equal(BiEncoder.load(slim).eval().encode(TEXTS, "query"), model.encode(TEXTS, "query"))


def test_a_slim_save_is_a_model_name_and_exports_as_a_full_model(base_dir, tmp_path):
    from hybridir.export import export_sentence_transformers

    model = trained(base_dir)
    slim = model.save(tmp_path / "slim", slim=True)
    via_name = BiEncoder.from_config(ModelConfig(name=str(slim))).eval()
    assert torch.equal(via_name.encode(TEXTS, "query"), model.encode(TEXTS, "query"))
    exported = export_sentence_transformers(BiEncoder.load(slim), tmp_path / "export")
    assert not (exported / TRAINABLE_FILE).exists()
    full = BiEncoder.load(exported).eval()
    assert torch.allclose(full.encode(TEXTS, "passage"), model.encode(TEXTS, "passage"), atol=1e-6)


def test_full_fine_tuning_never_saves_slim(base_dir, tmp_path):
    model = BiEncoder.from_config(ModelConfig(name=str(base_dir)))
    saved = model.save(tmp_path / "m", slim=True)
    assert (saved / "model.safetensors").is_file() and not (saved / TRAINABLE_FILE).exists()
