"""Exported models load in sentence-transformers as they are and give hybridir's embeddings.

hybridir.export: the real multilingual-e5-small (offline preset, full depth) and a real
partially fine-tuned checkpoint are exported and loaded with ``SentenceTransformer(dir)``;
``encode_query`` / ``encode_document`` / ``encode(prompt_name=...)`` must equal
``BiEncoder.encode`` per text (cosine >= 0.99999) on XQuAD-R questions and passages in four
scripts. The checkpoint comes from ``hybridir.train.train`` (top 1 of 2 layers trained for 2
steps on NTREX, E5 prefixes) on the tiny random-init encoder with mE5's real tokenizer: the
same checkpoint layout and partial fine-tuning path as a study trial's, at a 32 MB instead of a
400 MB embedding matrix (2 layers of mE5-small still carry all 96M embedding parameters),
which keeps every export of this module at about a second.
study/export.py: a study directory built like the driver leaves it (frozen study,
trials.jsonl rows through ResultStore, Train checkpoints of that training under
``ray/train-<phase>-<trial>/checkpoint_*``), exported by the CLI. No Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from hybridir.config import ModelConfig, TrainConfig
from hybridir.data.ntrex import load_ntrex
from hybridir.data.registry import load_eval_set
from hybridir.export import (
    ExportError,
    HubOfflineError,
    ModelCardInfo,
    base_model_info,
    build_model_card,
    export_sentence_transformers,
    push_to_hub,
)
from hybridir.model import BiEncoder
from hybridir.offline_model import OFFLINE_MODEL_NAME, UPSTREAM_MODEL
from hybridir.train import train
from study import export as study_export
from study.results import ResultStore
from study.spec import dump_study, load_study

REPO_ROOT = Path(__file__).resolve().parent.parent
SAME = 0.99999  # cosine per text: the same embedding up to float32 noise
LANGUAGES = ["en", "de", "es"]


def cosines(a, b) -> torch.Tensor:
    a = torch.as_tensor(a, dtype=torch.float32)
    b = torch.as_tensor(b, dtype=torch.float32)
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@pytest.fixture(scope="module")
def xquad_texts() -> tuple[list[str], list[str]]:
    """Two questions and two candidate passages each of German, Arabic, Chinese and Thai."""
    corpus = load_eval_set("xquad-r", languages=["de", "ar", "zh", "th"])
    queries = [text for lang in corpus.queries for text in list(corpus.queries[lang].values())[:2]]
    passages = [text for lang in corpus.candidates for text in list(corpus.candidates[lang].values())[:2]]
    return queries, passages


def assert_same_embeddings(st_model, model: BiEncoder, queries: list[str], passages: list[str]) -> None:
    expected_queries, expected_passages = model.encode(queries, "query"), model.encode(passages, "passage")
    for name, got, expected in (
        ("encode_query", st_model.encode_query(queries), expected_queries),
        ("encode_document", st_model.encode_document(passages), expected_passages),
        ("prompt_name=query", st_model.encode(queries, prompt_name="query"), expected_queries),
        ("prompt_name=passage", st_model.encode(passages, prompt_name="passage"), expected_passages),
    ):
        assert cosines(got, expected).min() >= SAME, name


# ---------------------------------------------------------------------------- the offline model
@pytest.mark.model
def test_offline_model_loads_in_sentence_transformers_with_its_e5_prompts(offline_model_dir, tmp_path, xquad_texts):
    from sentence_transformers import SentenceTransformer

    model = BiEncoder.from_config(ModelConfig(name="me5-small-offline"))
    # verify=False: this test checks more than the built-in check does, on more texts.
    directory = export_sentence_transformers(model, tmp_path / "me5", verify=False)

    saved = json.loads((directory / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == {"query": "query: ", "document": "passage: ", "passage": "passage: "}
    assert saved["default_prompt_name"] is None
    assert json.loads((directory / "1_Pooling/config.json").read_text())["include_prompt"] is True
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((directory / "modules.json").read_text())] == [
        "Transformer", "Pooling", "Normalize"]  # fmt: skip
    assert not list(tmp_path.glob(".me5*")), "staging folders are cleaned up"

    loaded = SentenceTransformer(str(directory), device="cpu")
    assert loaded.max_seq_length == model.max_length == 512
    assert loaded[0].auto_model.pooler is None  # loaded as saved: no randomly initialised pooler
    queries, passages = xquad_texts
    assert_same_embeddings(loaded, model, queries, passages)
    # No default prompt: a plain encode() adds none, so it is not the query embedding.
    assert cosines(loaded.encode(queries), model.encode(queries, "query")).max() < 0.9999

    card = ModelCard.load(directory / "README.md")  # the default card: the model's own honest name
    assert card.data.library_name == "sentence-transformers" and card.data.pipeline_tag == "sentence-similarity"
    assert OFFLINE_MODEL_NAME in card.text and "encode_query" in card.text


# ---------------------------------------------------------------------------- a trained checkpoint
@dataclass(frozen=True)
class TrainedRun:
    config: TrainConfig
    model_dir: Path  # the final checkpoint's model/ (BiEncoder.save)
    checkpoint_dir: Path  # the whole checkpoint (model/, trainer_state.pt, ...)
    untrained_dir: Path  # the same 2-layer model before training, saved alike


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir, tmp_path_factory) -> TrainedRun:
    """2 steps of partial fine-tuning (top 1 of 2 layers) on NTREX, with E5's prefixes."""
    root = tmp_path_factory.mktemp("trained")
    config = TrainConfig.model_validate({
        "data": {"languages": LANGUAGES, "max_pairs_per_language": 120, "validation_fraction": 0.0},
        "batching": {"batch_size": 4, "mode": "hybrid", "alpha": 0.5},
        "model": {"name": str(tiny_encoder_dir), "train_layers": 1, "query_prefix": "query: ",
                  "passage_prefix": "passage: ", "max_query_length": 32, "max_passage_length": 48},
        "optim": {"lr": 1e-2},
        "max_steps": 2,
        "log_every": 2,
        "seed": 3,
    })  # fmt: skip
    result = train(config, root / "run", pairs=load_ntrex(languages=LANGUAGES))
    untrained = BiEncoder.from_config(config.model).save(root / "untrained")
    return TrainedRun(config, result.model_dir, result.checkpoint_dir, untrained)


def test_trained_checkpoint_exports_its_trained_weights(trained, tmp_path, xquad_texts):
    from sentence_transformers import SentenceTransformer

    model = BiEncoder.load(trained.model_dir)
    assert model.train_layers == 1  # the partial fine-tuning path (frozen bottom + trained top)
    directory = export_sentence_transformers(model, tmp_path / "trained")  # verify=True: checked on export
    loaded = SentenceTransformer(str(directory), device="cpu")
    queries, passages = xquad_texts
    assert_same_embeddings(loaded, model, queries, passages)
    # The same directory is a BiEncoder for hybridir, the partial fine-tuning included.
    again = BiEncoder.load(directory)
    assert again.train_layers == 1 and again.prefixes == model.prefixes
    assert cosines(again.encode(passages, "passage"), model.encode(passages, "passage")).min() >= SAME
    untrained = BiEncoder.load(trained.untrained_dir)
    assert cosines(loaded.encode_query(queries), untrained.encode(queries, "query")).min() < 0.9999
    assert "top 1 of 2 layers fine-tuned" in ModelCard.load(directory / "README.md").text  # the default card

    # Exporting again replaces the earlier export whole; other directories are refused.
    export_sentence_transformers(untrained, directory, verify=False)
    assert cosines(SentenceTransformer(str(directory), device="cpu").encode_query(queries),
                   untrained.encode(queries, "query")).min() >= SAME  # fmt: skip
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier export"):
        export_sentence_transformers(model, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- the card
def test_card_front_matter_is_what_the_hub_reads():
    base = base_model_info("me5-small-offline", num_layers=2)
    assert (base.name, base.hub_id) == (OFFLINE_MODEL_NAME, UPSTREAM_MODEL)
    assert "Q4_0-dequantized copy" in base.note and "first 2 layers" in base.note
    assert base_model_info("me5-base").hub_id == "intfloat/multilingual-e5-base"
    assert base_model_info("/some/local/dir").hub_id is None
    info = ModelCardInfo(
        model_name=f"{OFFLINE_MODEL_NAME}, hybrid-batch fine-tuned",
        base_model=base.hub_id, base_model_name=base.name, base_model_note=base.note,
        training_datasets=["ntrex"], evaluation_datasets=["xquad-r"], languages=["en", "de", "th"],
        hyperparameters={"batching.alpha": 0.5, "optim.lr": 3e-5},
        metrics={"xquad-r": {"cross_map": 0.4123, "multi_ndcg@10": 0.5, "rank_distance": float("nan")}},
        study="default", cell=1, cell_axes={"batching.alpha": 0.5}, trial_id="abc_00001",
    )  # fmt: skip
    card = build_model_card(info, prompts={"query": "query: ", "document": "passage: "})
    front = yaml.safe_load(str(card).split("---")[1])
    assert front["base_model"] == UPSTREAM_MODEL and front["library_name"] == "sentence-transformers"
    assert front["datasets"] == ["ntrex", "xquad-r"] and front["language"] == ["en", "de", "th"]
    assert front["metrics"] == ["map", "ndcg_at_10"]  # NaN (not measured) is left out
    results = front["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == "xquad-r"
    assert [(m["type"], m["value"]) for m in results["metrics"]] == [("cross_map", 0.4123), ("multi_ndcg_at_10", 0.5)]
    assert "Q4_0-dequantized copy of intfloat/multilingual-e5-small" in card.text
    assert "| `batching.alpha` | 0.5 |" in card.text and "cross-lingual mAP | 0.4123" in card.text


def test_push_fails_at_once_offline_naming_the_repo(tmp_path, monkeypatch):
    (tmp_path / "modules.json").write_text("[]")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HubOfflineError, match=r"'me/hybrid-e5'.*offline"):
        push_to_hub(tmp_path, "me/hybrid-e5")
    assert time.perf_counter() - started < 5
    with pytest.raises(ExportError, match="not a Sentence Transformers export"):
        push_to_hub(tmp_path / "nothing", "me/hybrid-e5")


# ---------------------------------------------------------------------------- study/export.py
STUDY_SETS = ["axes.batching.alpha=[0.0, 1.0]", "max_steps=4", "model.num_layers=2", "model.train_layers=1"]


def _row(trial_id: str, cell: int, alpha: float, status: str, inter: float | None, phase: str = "search",
         seed: int | None = None) -> dict:
    """A results/trials row as study.tune_callback.ResultsCallback.record writes it."""
    row = {
        "trial_id": trial_id, "status": status, "finished_at": time.time(), "phase": phase, "cell": cell,
        "seed": seed, "source_trial": None, "axis/batching.alpha": alpha, "study_step": 4,
        "train/loss": 2.1, "wall_time_s": 30.0, "num_workers": 1, "use_gpu": False, "cpus_per_worker": 2,
        "worker_seconds": 30.0,
    }  # fmt: skip
    if inter is not None:
        row["inter/cross_map"] = inter
    if status == "completed":
        row.update({
            "final/xquad-r/mono_map": inter + 0.2, "final/xquad-r/cross_map": inter,
            "final/xquad-r/multi_map": inter - 0.05,
            "final/xquad-r/rank_distance": 1.5, "final/xquad-r/n_mono_queries": 600, "final/xquad-r/encode_s": 3.2,
            "model/display_name": f"{OFFLINE_MODEL_NAME}, first 2 of 12 layers",  # as the study's model says
            "model/training": "top 1 of 2 layers fine-tuned, embeddings and lower 1 layer frozen",
            "per_query/rows": 1800,
        })  # fmt: skip
    return row


def _place_checkpoint(run_dir: Path, phase: str, trial_id: str, model_dir: Path, index: int = 0) -> None:
    """A Ray Train checkpoint of hybridir's layout (hard links: no copy of the weights)."""
    checkpoint = run_dir / "ray" / f"train-{phase}-{trial_id}" / f"checkpoint_{index:06d}"
    shutil.copytree(model_dir, checkpoint / "model", copy_function=os.link)
    (checkpoint / "metrics.json").write_text(json.dumps({"step": 4}))


def make_study_dir(root: Path, trained: TrainedRun) -> Path:
    """Cell 0 (alpha 0): best = search trial s0 (trained, checkpoint_000001 over an older
    _000000); s2 worse (its checkpoint deleted). Cell 1 (alpha 1): best = seeds-phase trial r1
    (untrained weights); s1 completed but worse, p1 pruned with a higher objective, e1 error."""
    run_dir = root / "study"
    run_dir.mkdir()
    dump_study(load_study("default", STUDY_SETS), run_dir / "study.yaml")
    store = ResultStore(run_dir)
    for row in (
        _row("s0", 0, 0.0, "completed", 0.31),
        _row("s1", 1, 1.0, "completed", 0.25),
        _row("s2", 0, 0.0, "completed", 0.20),
        _row("p1", 1, 1.0, "pruned", 0.90),
        _row("e1", 1, 1.0, "error", None),
        _row("r1", 1, 1.0, "completed", 0.27, phase="seeds", seed=1),
    ):
        store.append_trial(row)
    _place_checkpoint(run_dir, "search", "s0", trained.untrained_dir, index=0)
    _place_checkpoint(run_dir, "search", "s0", trained.model_dir, index=1)
    _place_checkpoint(run_dir, "seeds", "r1", trained.untrained_dir)
    (run_dir / "ray" / "train-search-s2").mkdir(parents=True)  # checkpoints dropped, run folder kept
    return run_dir


def test_study_cli_exports_each_cells_best_trial_with_card_and_index(trained, tmp_path, xquad_texts):
    from sentence_transformers import SentenceTransformer

    run_dir = make_study_dir(tmp_path, trained)
    done = subprocess.run([sys.executable, "study/export.py", str(run_dir)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    models = run_dir / "models"
    assert done.stdout.split() == [str(models / "cell-0"), str(models / "cell-1")]

    index = json.loads((models / "index.json").read_text())
    assert index["study"] == "default"
    assert [(m["directory"], m["cell"], m["trial_id"], m["phase"], m["seed"]) for m in index["models"]] == [
        ("cell-0", 0, "s0", "search", None), ("cell-1", 1, "r1", "seeds", 1)]  # fmt: skip
    assert index["models"][0]["axes"] == {"batching.alpha": 0.0}
    assert index["models"][0]["objective"] == {"metric": "inter/cross_map", "mode": "max", "value": 0.31}
    assert index["models"][0]["source_checkpoint"].endswith("train-search-s0/checkpoint_000001/model")
    assert "| [cell-1](cell-1/) | 1 |" in (models / "README.md").read_text()

    queries, _ = xquad_texts
    for cell, source in ((0, trained.model_dir), (1, trained.untrained_dir)):
        loaded = SentenceTransformer(str(models / f"cell-{cell}"), device="cpu")
        expected = BiEncoder.load(source).encode(queries, "query")
        assert cosines(loaded.encode_query(queries), expected).min() >= SAME, f"cell {cell}"

    card = ModelCard.load(models / "cell-0" / "README.md")
    assert card.data.base_model == UPSTREAM_MODEL and card.data.library_name == "sentence-transformers"
    assert card.data.datasets == ["ntrex", "xquad-r"]
    assert {"en", "de", "th", "zh"} <= set(card.data.language)
    assert {(r.dataset_name, r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        ("xquad-r", "mono_map", 0.51), ("xquad-r", "cross_map", 0.31), ("xquad-r", "multi_map", 0.26),
        ("xquad-r", "rank_distance", 1.5)}  # bookkeeping (n_*, *_s) left out  # fmt: skip
    for text in (OFFLINE_MODEL_NAME, "Q4_0-dequantized copy of intfloat/multilingual-e5-small",
                 "| `batching.alpha` | 0.0 (scaling axis) |", "| `optim.lr` | 3e-05 |", "| `data.num_languages` | 11 |",
                 "| `model.train_layers` | 1 |", "| study | default |", "| trial | s0 |",
                 "top 1 of 2 layers fine-tuned", "inter/cross_map = 0.3100"):  # fmt: skip
        assert text in card.text, text
    seeds_card = ModelCard.load(models / "cell-1" / "README.md").text
    assert "| phase | seeds |" in seeds_card and "| seed | 1 |" in seeds_card


def test_study_export_of_one_trial_and_a_storage_uri(trained, tmp_path):
    run_dir = make_study_dir(tmp_path, trained)
    storage = (run_dir / "ray").rename(tmp_path / "moved-storage")  # a study whose storage moved
    with pytest.raises(study_export.StudyExportError, match="no checkpoint_"):
        study_export.export_trial(run_dir, "s0", verify=False)
    exported = study_export.export_trial(run_dir, "s0", tmp_path / "out", storage=storage.as_uri(), verify=False)
    assert exported == tmp_path / "out" / "trial-s0"
    assert json.loads((exported / "biencoder.json").read_text())["train_layers"] == 1
    assert [m["directory"] for m in json.loads((tmp_path / "out" / "index.json").read_text())["models"]] == ["trial-s0"]


def test_study_export_errors_come_before_any_model_is_loaded(trained, tmp_path, capsys, monkeypatch):
    run_dir = make_study_dir(tmp_path, trained)
    shutil.rmtree(run_dir / "ray" / "train-seeds-r1")  # cell 1's best lost its checkpoint

    def main(*args: str) -> str:
        assert study_export.main([str(run_dir), *args]) == 2
        return capsys.readouterr().err

    error = main("--cell", "1")
    assert "trial r1 (seeds)" in error and str(run_dir / "ray" / "train-seeds-r1") in error
    assert "--set resources.keep_checkpoints=true" in error
    error = main("--cell", "7")
    assert "no cell [7]" in error and "0: batching.alpha=0.0; 1: batching.alpha=1.0" in error
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = main("--cell", "0", "--push-to-hub", "me/hybrid-e5")
    assert "'me/hybrid-e5'" in error and "offline" in error
    monkeypatch.setattr("hybridir.export.hub_offline", lambda: False)
    assert "uploads one model; 2 cells" in main("--push-to-hub", "me/hybrid-e5")
    assert not (run_dir / "models").exists()  # nothing was exported by any of these

    assert study_export.main([str(tmp_path / "elsewhere")]) == 2
    assert "is not a study directory" in capsys.readouterr().err
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    dump_study(load_study("default", STUDY_SETS), lonely / "study.yaml")
    ResultStore(lonely).append_trial(_row("p0", 0, 0.0, "pruned", 0.4))
    assert study_export.main([str(lonely)]) == 2
    assert "no completed trial" in capsys.readouterr().err
