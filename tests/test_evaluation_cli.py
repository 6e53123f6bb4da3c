"""The ``python -m hybridir.evaluate`` command: argument checks and an end-to-end run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hybridir import evaluate


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "squad"], "unknown --dataset 'squad'"),
        (["--dataset", "xquad-r", "--languages", "ar,xx"], "--languages"),
        (["--dataset", "xquad-r", "--languages", "fr"], "fr"),
        (["--dataset", "mlqa-r", "--max-queries", "0"], "--max-queries must be >= 1"),
        (["--dataset", "mlqa-r", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--dataset", "mlqa-r", "--train-layers", "0"], "--train-layers must be >= 1"),
        (["--dataset", "mlqa-r", "--cache-dir", "/tmp/x"], "not a partially fine-tuned model"),
    ],
)
def test_bad_arguments_fail_before_loading(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "run", lambda args: pytest.fail("run() reached with bad arguments"))
    with pytest.raises(SystemExit):
        evaluate.main(["--model", "does-not-exist", *argv])
    assert message in capsys.readouterr().err


def test_default_output_directory_is_per_model_and_dataset():
    args = evaluate.parse_args(["--model", "me5-small-offline", "--dataset", "xquad-r", "--num-layers", "3"])
    assert args.output.as_posix() == "results/eval/me5-small-offline-l3/xquad-r"
    assert evaluate.model_slug("intfloat/multilingual-e5-small") == "intfloat-multilingual-e5-small"


def test_end_to_end_lareqa_with_a_tiny_encoder(tiny_encoder_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--model", str(tiny_encoder_dir), "--dataset", "xquad-r", "--languages", "de,el",
            "--max-queries", "8", "--output", str(out), "--save-embeddings"]  # fmt: skip
    evaluate.main(argv)
    printed = capsys.readouterr().out
    assert "mono" in printed and "rank distance" in printed and "wall time" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_mono_queries"] == 16 and summary["n_multi_queries"] == 16 and summary["n_cross_cells"] == 2
    assert summary["languages"] == ["de", "el"]
    assert 0 <= summary["multi_map"] <= 1 and summary["encode_s"] > 0 and summary["load_s"] > 0
    matrix = pd.read_csv(out / "matrix_map.csv", index_col=0)
    assert list(matrix.index) == ["de", "el"] and list(matrix.columns) == ["de", "el"]
    assert matrix.loc["de", "de"] == pytest.approx(pd.read_csv(out / "per_language.csv", index_col=0).loc["de", "mono_map"])
    assert (out / "multilingual.csv").is_file() and (out / "per_query.parquet").is_file()
    assert (out / "embeddings" / "candidates.el.npy").is_file()
    # full candidate pools were encoded: XQuAD-R has 1,276 de and 1,234 el sentences
    assert summary["n_candidate_texts"] >= 2400


def test_end_to_end_bitext(tiny_encoder_dir, tmp_path):
    out = tmp_path / "bitext"
    evaluate.main(["--model", str(tiny_encoder_dir), "--dataset", "tatoeba", "--languages", "deu,fra",
                   "--max-queries", "30", "--output", str(out)])  # fmt: skip
    pairs = pd.read_csv(out / "pairs.csv")
    assert sorted(zip(pairs.source, pairs.target)) == [("de", "en"), ("en", "de"), ("en", "fr"), ("fr", "en")]
    # Tatoeba ids differ per pair: --max-queries samples 30 in each language
    sentences = pairs.set_index(["source", "target"]).n_sentences
    assert sentences.loc[("de", "en")] == sentences.loc[("fr", "en")] == 30
    assert json.loads((out / "summary.json").read_text())["n_candidate_texts"] <= 60
    per_query = pd.read_parquet(out / "per_query.parquet")
    assert len(per_query) == 2 * 60 and set(per_query.setting) == {"bitext"}
    accuracy = per_query.groupby(["query_lang", "candidate_lang"])["correct@1"].mean()
    assert accuracy.to_dict() == pytest.approx(pairs.set_index(["source", "target"]).accuracy.to_dict(), abs=1e-5)  # %.6g CSV


def test_the_activation_cache_makes_a_second_evaluation_read_only_and_equal(tmp_path, capsys):
    from conftest import build_tiny_encoder_dir

    model = build_tiny_encoder_dir(tmp_path / "tiny4", num_layers=4)
    base = ["--model", str(model), "--dataset", "xquad-r", "--languages", "de,el", "--max-queries", "8"]
    evaluate.main([*base, "--output", str(tmp_path / "plain")])
    cached = [*base, "--train-layers", "1", "--cache-dir", str(tmp_path / "cache")]
    evaluate.main([*cached, "--output", str(tmp_path / "cold")])
    evaluate.main([*cached, "--output", str(tmp_path / "warm")])
    capsys.readouterr()
    plain, cold, warm = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("plain", "cold", "warm"))
    assert cold["activation_cache_hits"] == 0 and cold["activation_cache_misses"] > 2400
    assert warm["activation_cache_misses"] == 0 and warm["activation_cache_hits"] == cold["activation_cache_misses"]
    for key in ("mono_map", "cross_map", "multi_map", "rank_distance"):
        assert cold[key] == pytest.approx(plain[key], abs=1e-6) and warm[key] == pytest.approx(plain[key], abs=1e-6)


# ---------------------------------------------------------------------- device (issue 18 fix 3)
def test_device_defaults_to_cuda_when_torch_sees_a_gpu(monkeypatch):
    import torch

    base = ["--model", "me5-small-offline", "--dataset", "xquad-r"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert evaluate.parse_args(base).device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert evaluate.parse_args(base).device == torch.device("cuda")
    assert evaluate.parse_args([*base, "--device", "cpu"]).device == torch.device("cpu")  # --device wins
    assert evaluate.parse_args(base).precision == "fp32"


def test_a_missing_gpu_fails_before_loading(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(evaluate, "run", lambda args: pytest.fail("run() reached with bad arguments"))
    for device, message in (("cuda", "no CUDA GPU"), ("gpu0", "--device 'gpu0'"), ("meta", "expected cpu, cuda")):
        with pytest.raises(SystemExit):
            evaluate.main(["--dataset", "xquad-r", "--device", device])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("device_arg, expected", [(None, "cuda"), ("cpu", "cpu")])
def test_run_moves_the_model_to_the_chosen_device_and_autocasts_bf16(tiny_encoder_dir, tmp_path, monkeypatch,
                                                                    device_arg, expected):
    # Issue 18: on a GPU machine the evaluator silently ran on CPU. A pretend GPU (is_available
    # patched) must be where run() puts the model; the move itself is recorded, not performed.
    import torch

    from hybridir.model import BiEncoder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    moved, autocast = [], []
    monkeypatch.setattr(BiEncoder, "to", lambda self, device: moved.append(torch.device(device)) or self)
    real_forward = BiEncoder.forward

    def forward(self, input_ids, attention_mask):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return real_forward(self, input_ids, attention_mask)

    monkeypatch.setattr(BiEncoder, "forward", forward)
    argv = ["--model", str(tiny_encoder_dir), "--dataset", "tatoeba", "--languages", "deu",
            "--max-queries", "4", "--output", str(tmp_path / "out")]  # fmt: skip
    if device_arg:
        argv += ["--device", device_arg, "--precision", "bf16"]
    summary = evaluate.run(evaluate.parse_args(argv))
    assert moved == [torch.device(expected)] and summary["device"] == expected
    assert autocast and all(autocast) == (device_arg == "cpu")  # bf16 autocast on the device's type
