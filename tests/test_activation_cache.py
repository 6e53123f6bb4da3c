"""The on-disk activation cache: round trips, concurrent writers, damage detection, the size limit."""

from __future__ import annotations

import logging
import multiprocessing

import pytest
import torch

from hybridir.activation_cache import SHARD_SUFFIX, ActivationCache, entry_key

GIB = 2**30


def _entries(n: int, seed: int = 0, hidden: int = 8) -> tuple[list[str], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    values = [torch.randn(int(torch.randint(1, 9, (1,), generator=generator)), hidden, generator=generator) for _ in range(n)]
    keys = [entry_key(torch.arange(i, i + 3 + seed * 1000)) for i in range(n)]
    return keys, values


def _cache(root, namespace: str = "ns", max_bytes: int = GIB) -> ActivationCache:
    return ActivationCache(root, namespace, {"test": True}, max_bytes)


def test_entries_round_trip_through_a_shard_and_a_new_reader(tmp_path):
    keys, values = _entries(20)
    writer = _cache(tmp_path)
    writer.put_many(keys, values)
    assert writer.get_many(keys[:1])[0] is not None  # pending entries are already readable
    shard = writer.flush()
    assert shard is not None and shard.suffix == SHARD_SUFFIX and shard.parent == tmp_path / "ns"
    assert not list((tmp_path / "ns").glob("*.tmp"))

    reader = _cache(tmp_path)
    assert len(reader) == 20
    for got, expected in zip(reader.get_many(keys), values):
        assert torch.equal(got, expected)
    assert reader.get_many([entry_key(torch.tensor([999]))]) == [None]
    assert reader.stats["hits"] == 20 and reader.stats["misses"] == 1
    assert (tmp_path / "ns" / "namespace.json").is_file()


def test_entry_key_depends_on_every_token():
    assert entry_key(torch.tensor([1, 2, 3])) == entry_key(torch.tensor([1, 2, 3]))
    assert entry_key(torch.tensor([1, 2, 3])) != entry_key(torch.tensor([1, 2, 4]))
    assert entry_key(torch.tensor([1, 2, 3])) != entry_key(torch.tensor([1, 2]))


def test_a_reader_sees_shards_that_another_process_writes_later(tmp_path):
    keys, values = _entries(5)
    reader = _cache(tmp_path)
    assert reader.get_many(keys) == [None] * 5
    writer = _cache(tmp_path)
    writer.put_many(keys, values)
    writer.flush()
    assert all(v is not None for v in reader.get_many(keys))  # a miss looks for new shards


def _write_from_process(root: str, seed: int) -> None:
    keys, values = _entries(300, seed=seed % 2)  # two writers share every key pairwise
    cache = _cache(root)
    for start in range(0, 300, 50):
        cache.put_many(keys[start : start + 50], values[start : start + 50])
        cache.flush()


def test_concurrent_writers_leave_only_complete_shards(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_from_process, args=(str(tmp_path), seed)) for seed in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert not list((tmp_path / "ns").glob("*.tmp"))
    cache = _cache(tmp_path)
    for seed in (0, 1):
        keys, values = _entries(300, seed=seed)
        for got, expected in zip(cache.get_many(keys), values):
            assert torch.equal(got, expected)
    assert cache.stats["corrupt"] == 0


def test_a_truncated_shard_is_reported_moved_aside_and_recomputed(tmp_path, caplog):
    keys, values = _entries(10)
    writer = _cache(tmp_path)
    writer.put_many(keys, values)
    shard = writer.flush()
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="hybridir.activation_cache"):
        reader = _cache(tmp_path)
    assert reader.get_many(keys) == [None] * 10
    assert shard.name in caplog.text and "recomputed" in caplog.text
    assert not shard.exists() and shard.with_name(shard.name + ".corrupt").exists()
    # the recomputed entries go into a new shard that a later reader uses
    reader.put_many(keys, values)
    reader.flush()
    assert all(torch.equal(a, b) for a, b in zip(_cache(tmp_path).get_many(keys), values))


def test_a_changed_byte_in_an_entry_is_caught_by_its_checksum(tmp_path, caplog):
    keys, values = _entries(4)
    writer = _cache(tmp_path)
    writer.put_many(keys, values)
    shard = writer.flush()
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # inside the data of the last entries (the header is at the front)
    shard.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="hybridir.activation_cache"):
        got = _cache(tmp_path).get_many(keys)
    assert None in got
    assert "checksum" in caplog.text
    for value, expected in zip(got, values):
        assert value is None or torch.equal(value, expected)  # nothing damaged is ever returned


def test_the_size_limit_stops_caching_with_one_clear_warning(tmp_path, caplog):
    keys, values = _entries(50)
    cache = _cache(tmp_path, max_bytes=2_000)
    with caplog.at_level(logging.WARNING, logger="hybridir.activation_cache"):
        cache.put_many(keys[:25], values[:25])
        assert cache.flush() is None
        cache.put_many(keys[25:], values[25:])
        assert cache.flush() is None
    assert caplog.text.count("is full") == 1
    assert "model.activation_cache_max_gb" in caplog.text
    assert not list((tmp_path / "ns").glob(f"*{SHARD_SUFFIX}"))
    assert cache.get_many(keys[:1]) == [None]  # nothing half-kept
    with pytest.raises(ValueError, match="positive"):
        _cache(tmp_path, max_bytes=0)
