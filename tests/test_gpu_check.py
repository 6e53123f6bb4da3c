"""The GPU check (bench/gpu_check.sh, issue 18): its reduced model transport and its CPU dry run.

The dry run packs a tiny reduced offline model (2 languages, 48 NTREX items, 2 layers) and runs
every section of the device check on CPU: the same code path as on the GPU, with the GPU-only
rows reported as skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_DRY_PACK": str(root / "pack"), "OUT": str(root / "out")}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout, json.loads((root / "out" / "gpu_check.json").read_text())


def test_dry_run_passes_every_section_and_skips_the_gpu_only_rows(dry_run):
    root, stdout, result = dry_run
    rows = {row["check"]: row for row in result["rows"]}
    assert result["dry_run"] and not result["errors"]
    assert not [r for r in result["rows"] if r["status"] in ("FAIL", "ERROR")]
    assert rows["embeddings fp32 vs CPU fp32 (cpu)"]["max_abs"] == 0.0
    assert rows["embeddings bf16 vs CPU fp32 (cpu)"]["min_cosine"] >= 0.9999
    resume = next(r for name, r in rows.items() if name.startswith("resume"))
    assert resume["loss_diff"] == 0 and resume["weight_diff"] == 0  # CPU: bitwise
    partial = next(r for name, r in rows.items() if name.startswith("partial fine-tuning"))
    assert partial["warm_hit_rate"] == 1.0 and partial["loss_diff"] == 0
    assert next(r for name, r in rows.items() if "all-reduce" in name)["status"].startswith("skipped (no GPU")
    steps = [r for name, r in rows.items() if name.startswith("training step")]
    assert steps and all(r["status"].startswith("skipped") and r["s_per_step"] > 0 and r["tflops"] > 0 for r in steps)
    encoding = [r for name, r in rows.items() if name.startswith("encoding")]
    assert len(encoding) == 2 and all(r["texts_per_s"] > 0 for r in encoding)
    # one table, also written as text
    text = (root / "out" / "gpu_check.txt").read_text()
    assert text.count("CPU DRY RUN") == 1 and "MFU = 3 * sum" in text and text.strip() in stdout


def test_the_pack_is_small_and_verified(dry_run):
    root, _, _ = dry_run
    info = json.loads((root / "pack" / "reference.json").read_text())
    assert info["verified"]["weights_equal"] and info["verified"]["texts_with_equal_tokens"] == 2 * 2 * 48 + 2 * 48
    assert info["vocabulary"]["kept"] < 5000 < info["vocabulary"]["full"]
    assert sum(f.stat().st_size for f in (root / "pack").rglob("*") if f.is_file()) < 8 * 2**20


def test_a_reduced_tokenizer_missing_a_used_piece_is_caught(offline_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from hybridir.offline_model import OfflineModelError
    from hybridir.offline_model.transport import check_same_tokens, reduce_tokenizer_json, used_token_ids

    full = AutoTokenizer.from_pretrained(offline_model_dir)
    texts = ["passage: Der Hund schläft im Garten.", "passage: Ο σκύλος κοιμάται στον κήπο."]
    tokenizer_json = json.loads((offline_model_dir / "tokenizer.json").read_text())
    specials = [t["id"] for t in tokenizer_json["added_tokens"]]
    keep = sorted(used_token_ids(full, texts, 64) | set(specials))

    def reduced(ids) -> object:
        directory = tmp_path / f"tok{len(ids)}"
        directory.mkdir()
        (directory / "tokenizer.json").write_text(json.dumps(reduce_tokenizer_json(tokenizer_json, ids)))
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            (directory / name).write_text((offline_model_dir / name).read_text())
        return AutoTokenizer.from_pretrained(directory)

    assert check_same_tokens(full, reduced(keep), keep, texts, 64) == 2
    dropped = [i for i in keep if i not in specials][len(keep) // 2]
    smaller = [i for i in keep if i != dropped]
    with pytest.raises(OfflineModelError, match="differs"):
        check_same_tokens(full, reduced(smaller), smaller, texts, 64)


def test_materialized_weights_dequantise_to_the_full_models(offline_model_dir, tmp_path):
    from safetensors import safe_open

    from hybridir.offline_model import locate_sources
    from hybridir.offline_model.transport import reduced_state_dict, write_reduced

    keep = [0, 1, 2, 3, 6, 100, 250001]
    manifest = write_reduced(locate_sources().weights.path, offline_model_dir, keep, tmp_path / "r", num_layers=1)
    state = reduced_state_dict(tmp_path / "r")
    assert manifest["config"]["vocab_size"] == len(keep) and manifest["config"]["num_hidden_layers"] == 1
    with safe_open(str(offline_model_dir / "model.safetensors"), framework="pt") as full:
        for name, value in state.items():
            expected = full.get_tensor(name)
            if name == "embeddings.word_embeddings.weight":
                expected = expected[torch.tensor(keep)]
            assert torch.equal(value, expected), name
    assert not any(".layer.1." in name for name in state)
