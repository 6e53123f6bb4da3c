"""BiEncoder: tokenisation, pooling, truncation, freezing, save/load, presets, errors."""

from __future__ import annotations

import pytest
import torch

from hybridir.config import ModelConfig
from hybridir.model import MODEL_PRESETS, BiEncoder, ModelNotAvailableError, PairEncoder

TEXTS = [
    "Der Hund schläft.",
    "A considerably longer English sentence about the weather in the mountains this week.",
    "猫",
]


@pytest.fixture(scope="module")
def tiny(tiny_encoder_dir) -> BiEncoder:
    model = BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir), query_prefix="query: "))
    return model.eval()


def test_tokenize_pads_to_longest_text_of_the_call_and_adds_prefix(tiny):
    long_batch = tiny.tokenize(TEXTS, "query", max_length=128)
    short_batch = tiny.tokenize(TEXTS[:1], "query", max_length=128)
    lengths = long_batch["attention_mask"].sum(dim=1)
    assert long_batch["input_ids"].shape[1] == int(lengths.max()) < 128
    assert short_batch["input_ids"].shape[1] == int(short_batch["attention_mask"].sum())
    assert set(long_batch) == {"input_ids", "attention_mask"}
    decoded = tiny.tokenizer.decode(short_batch["input_ids"][0], skip_special_tokens=True)
    assert decoded.startswith("query: Der Hund")
    # the passage prefix of a plain directory is empty
    passage = tiny.tokenizer.decode(tiny.tokenize(TEXTS[:1], "passage")["input_ids"][0], skip_special_tokens=True)
    assert passage.startswith("Der Hund")


def test_tokenize_truncates_to_max_length_and_rejects_unknown_kind(tiny):
    assert tiny.tokenize(TEXTS, "passage", max_length=8)["input_ids"].shape == (3, 8)
    with pytest.raises(ValueError, match="kind"):
        tiny.tokenize(TEXTS, "document")


def test_embeddings_are_normalised_and_independent_of_padding(tiny):
    batch = tiny.tokenize(TEXTS, "passage")
    with torch.no_grad():
        together = tiny(**batch)
        alone = torch.cat([tiny(**tiny.tokenize([text], "passage")) for text in TEXTS])
    assert together.shape == (3, 32)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(3))
    # mean pooling must ignore padding positions entirely
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_cls_pooling_takes_the_first_token(tiny_encoder_dir):
    model = BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir), pooling="cls")).eval()
    batch = model.tokenize(TEXTS, "query")
    with torch.no_grad():
        first = model.encoder(**batch).last_hidden_state[:, 0]
        torch.testing.assert_close(model(**batch), torch.nn.functional.normalize(first, dim=-1))


def test_num_layers_keeps_the_first_layers_and_says_so(tiny_encoder_dir, tiny):
    truncated = BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir), num_layers=1)).eval()
    assert len(truncated.encoder.encoder.layer) == 1
    assert "first 1 of 2 layers" in truncated.display_name
    full_layer0 = tiny.encoder.encoder.layer[0].state_dict()
    for name, value in truncated.encoder.encoder.layer[0].state_dict().items():
        torch.testing.assert_close(value, full_layer0[name])
    with pytest.raises(ValueError, match="num_layers=3 exceeds the 2 layers"):
        BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir), num_layers=3))


def test_only_weights_left_at_random_init_are_reported(tiny_encoder_dir, tmp_path, caplog):
    import json
    import shutil

    with caplog.at_level("WARNING", logger="hybridir.model"):
        BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir), num_layers=1))
    assert not caplog.records  # dropped layers are intended, not a problem
    deeper = shutil.copytree(tiny_encoder_dir, tmp_path / "deeper")
    config = json.loads((deeper / "config.json").read_text())
    (deeper / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with caplog.at_level("WARNING", logger="hybridir.model"):
        BiEncoder.from_config(ModelConfig(name=str(deeper)))
    assert "left randomly initialised" in caplog.text and "layer.2." in caplog.text


def test_no_pooler_and_freeze_embeddings(tiny_encoder_dir):
    model = BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir)))
    assert not any("pooler" in name for name, _ in model.named_parameters())
    frozen = model.freeze_embeddings()
    assert frozen == model.encoder.embeddings.word_embeddings.weight.numel() == 250002 * 32
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "encoder.embeddings.word_embeddings.weight" not in trainable
    assert "encoder.embeddings.position_embeddings.weight" in trainable
    assert any(name.startswith("encoder.encoder.layer.1.") for name in trainable)


def test_save_and_load_round_trip(tiny, tmp_path):
    tiny.temperature = 0.07
    saved = tiny.save(tmp_path / "saved")
    assert (saved / "model.safetensors").is_file() and (saved / "biencoder.json").is_file()
    loaded = BiEncoder.load(saved).eval()
    assert loaded.settings() == tiny.settings()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**loaded.tokenize(TEXTS, "query")), tiny(**tiny.tokenize(TEXTS, "query"))
        )
    # a saved directory given as model.name keeps its prefixes; config fields still override
    again = BiEncoder.from_config(ModelConfig(name=str(saved), passage_prefix="doc: "))
    assert again.prefixes == {"query": "query: ", "passage": "doc: "}
    tiny.temperature = 0.05


def test_pair_encoder_encodes_queries_and_passages_in_one_call(tiny):
    queries, passages = tiny.tokenize(TEXTS, "query"), tiny.tokenize(TEXTS[::-1], "passage")
    with torch.no_grad():
        q, p = PairEncoder(tiny)(queries, passages)
        torch.testing.assert_close(q, tiny(**queries))
        torch.testing.assert_close(p, tiny(**passages))


def test_presets_table():
    assert {"me5-small", "me5-base", "me5-large", "xlmr-base", "xlmr-large", "me5-small-offline"} <= set(MODEL_PRESETS)
    ladder = {name: MODEL_PRESETS[f"me5-small-offline-l{name}"] for name in (3, 6, 12)}
    assert {n: preset.num_layers for n, preset in ladder.items()} == {3: 3, 6: 6, 12: 12}
    assert MODEL_PRESETS["me5-small"].query_prefix == "query: "
    assert MODEL_PRESETS["xlmr-base"].query_prefix == "" and MODEL_PRESETS["xlmr-base"].pooling == "mean"


def test_unreachable_hub_model_fails_with_offline_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="HF_HUB_OFFLINE.*offline preset"):
        BiEncoder.from_config(ModelConfig(name="xlmr-large"))


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        BiEncoder.from_config(ModelConfig(name=str(tmp_path / "nowhere")))
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelNotAvailableError, match="is a file"):
        BiEncoder.from_config(ModelConfig(name=str(tmp_path / "file.bin")))


@pytest.mark.model
def test_offline_depth_ladder_preset_is_a_working_multilingual_encoder():
    model = BiEncoder.from_config(ModelConfig(name="me5-small-offline-l6")).eval()
    assert model.display_name == "multilingual-e5-small (Q4_0-dequantized), first 6 of 12 layers"
    assert len(model.encoder.encoder.layer) == 6 and model.prefixes["query"] == "query: "
    queries = model.encode(["Where does the cat sleep?", "How much does the new train ticket cost?"], "query")
    passages = model.encode(["Die Katze schläft auf dem Sofa.", "Die neue Fahrkarte kostet zehn Euro."], "passage")
    scores = queries @ passages.T
    # even 6 of 12 layers match each question to its German answer
    assert scores.argmax(dim=1).tolist() == [0, 1]
