"""Hybrid-batch sampler on real NTREX-128 lines (read in place from the data mirror)."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hybridir.batching import (
    EXPOSURE_FIELDS,
    Exposure,
    HybridBatchSampler,
    LanguageExposure,
    PairRef,
    TrainingPool,
    is_monolingual,
)
from hybridir.config import BatchConfig, DataConfig
from hybridir.data.types import ParallelPairs
from hybridir.languages import canonical

NTREX_FILES = ("deu", "fra", "jpn", "zho-CN", "arb", "swa")  # NTREX file codes, in the fixture's order
NUM_LINES = 300  # the first documents of newstest2019 are enough and keep the fixture fast


def _ntrex_dir() -> Path:
    return Path(os.environ["HYBRIDIR_MIRROR"]) / "github" / "MicrosoftTranslator" / "NTREX"


def _read_lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(NUM_LINES)]


def _load_ntrex() -> ParallelPairs:
    """Query = an NTREX sentence, passage = the next sentence of the same news document."""
    root = _ntrex_dir()
    documents = _read_lines(root / "DOCUMENT_IDS.tsv")
    items = [i for i in range(NUM_LINES - 1) if documents[i] == documents[i + 1]]
    queries, passages = {}, {}
    for code in NTREX_FILES:
        lines = _read_lines(root / "NTREX-128" / f"newstest2019-ref.{code}.txt")
        queries[canonical(code)] = [lines[i] for i in items]
        passages[canonical(code)] = [lines[i + 1] for i in items]
    return ParallelPairs(
        name="ntrex-sample",
        item_ids=[f"ntrex:{i}" for i in items],
        groups=[documents[i] for i in items],
        queries=queries,
        passages=passages,
    )


@pytest.fixture(scope="module")
def ntrex() -> ParallelPairs:
    return _load_ntrex()


@pytest.fixture(scope="module")
def pool(ntrex: ParallelPairs) -> TrainingPool:
    return TrainingPool(ntrex, ntrex.languages, {}, seed=0)


def _batches(sampler: HybridBatchSampler, count: int) -> list[list[PairRef]]:
    return [batch for _, _, batch in sampler.iterate(num_steps=count)]


def test_fixture_is_real_parallel_text(ntrex: ParallelPairs) -> None:
    assert ntrex.languages == ["de", "fr", "ja", "zh", "ar", "sw"]
    assert 250 < len(ntrex) < NUM_LINES
    assert len({ntrex.queries["ja"][k] for k in range(len(ntrex))}) > 0.95 * len(ntrex)
    assert ntrex.queries["de"][0] != ntrex.queries["fr"][0]


def test_pair_refs_resolve_to_the_right_language_lines(ntrex: ParallelPairs, pool: TrainingPool) -> None:
    raw = {
        canonical(code): _read_lines(_ntrex_dir() / "NTREX-128" / f"newstest2019-ref.{code}.txt")
        for code in NTREX_FILES
    }
    sampler = HybridBatchSampler(pool, batch_size=8, mode="xy", alpha=0.0, seed=3)
    for ref in sampler.global_batch(0, 0):
        line = int(ntrex.item_ids[ref.item].split(":")[1])
        assert ntrex.queries[ref.query_lang][ref.item] == raw[ref.query_lang][line]
        assert ntrex.passages[ref.passage_lang][ref.item] == raw[ref.passage_lang][line + 1]


def test_xx_batches_are_monolingual(pool: TrainingPool) -> None:
    sampler = HybridBatchSampler(pool, batch_size=16, mode="xx", alpha=0.0, seed=1)
    batches = _batches(sampler, 200)
    assert all(is_monolingual(batch) for batch in batches)
    assert all(ref.query_lang == ref.passage_lang for batch in batches for ref in batch)
    assert {batch[0].query_lang for batch in batches} == set(pool.languages)


def test_xy_pairs_are_all_cross_lingual(pool: TrainingPool) -> None:
    sampler = HybridBatchSampler(pool, batch_size=16, mode="xy", alpha=1.0, seed=1)
    refs = [ref for batch in _batches(sampler, 200) for ref in batch]
    assert all(ref.query_lang != ref.passage_lang for ref in refs)
    assert not any(HybridBatchSampler.is_monolingual(batch) for batch in _batches(sampler, 50))
    # Both directions of every language pair occur: 6 * 5 ordered pairs.
    assert len({(ref.query_lang, ref.passage_lang) for ref in refs}) == 30


@pytest.mark.parametrize("mode", ["xx", "xy", "hybrid"])
def test_no_parallel_item_twice_in_a_batch(ntrex: ParallelPairs, mode: str) -> None:
    # A batch as large as the pool forces every draw to avoid collisions.
    pool = TrainingPool(ntrex, ntrex.languages, {"de": 64, "fr": 64}, seed=0)
    sampler = HybridBatchSampler(pool, batch_size=64, mode=mode, alpha=0.5, seed=2)
    for batch in _batches(sampler, 50):
        assert len(batch) == 64
        assert len({ref.item for ref in batch}) == 64


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_measured_xx_share_converges_to_alpha(pool: TrainingPool, alpha: float) -> None:
    n = 4000
    sampler = HybridBatchSampler(pool, batch_size=2, mode="hybrid", alpha=alpha, seed=11)
    share = sum(is_monolingual(batch) for batch in _batches(sampler, n)) / n
    tolerance = 4.5 * math.sqrt(alpha * (1 - alpha) / n)  # binomial: fails by chance ~1e-5
    assert abs(share - alpha) <= tolerance
    assert sampler.describe()["expected_xx_share"] == alpha


def test_xx_languages_are_weighted_by_their_items(ntrex: ParallelPairs) -> None:
    caps = {"de": 200, "fr": 100, "ja": 50, "zh": 40, "ar": 0, "sw": 10}
    pool = TrainingPool(ntrex, ntrex.languages, caps, seed=0)
    sampler = HybridBatchSampler(pool, batch_size=16, mode="xx", alpha=1.0, seed=5)
    # sw has fewer than 16 items: smaller X-X batches, same weight rule; ar (0 items) has none.
    assert sampler.describe()["xx_languages"] == ["de", "fr", "ja", "zh", "sw"]
    assert sampler.describe()["xx_batch_sizes"] == {"de": 16, "fr": 16, "ja": 16, "zh": 16, "sw": 10}
    n = 3000
    batches = _batches(sampler, n)
    counts = Counter(batch[0].query_lang for batch in batches)
    assert set(counts) == {"de", "fr", "ja", "zh", "sw"}
    for lang, items in {"de": 200, "fr": 100, "ja": 50, "zh": 40, "sw": 10}.items():
        weight = items / 400
        assert abs(counts[lang] / n - weight) <= 4.5 * math.sqrt(weight * (1 - weight) / n)
    assert {len(batch) for batch in batches if batch[0].query_lang == "sw"} == {10}


def test_caps_are_respected_and_nested(ntrex: ParallelPairs) -> None:
    caps = {"de": 200, "fr": 100, "ja": 30, "zh": None, "ar": 0, "sw": 5000}
    pool = TrainingPool(ntrex, ntrex.languages, caps, seed=7)
    n = len(ntrex)
    assert pool.sizes == {"de": 200, "fr": 100, "ja": 30, "zh": n, "ar": 0, "sw": n}
    de, fr, ja = (set(pool.items(lang).tolist()) for lang in ("de", "fr", "ja"))
    assert ja <= fr <= de  # one permutation for all languages
    # The same seed with a larger cap keeps the smaller selection: data-size points nest.
    larger = TrainingPool(ntrex, ["fr"], {"fr": 250}, seed=7)
    assert fr <= set(larger.items("fr").tolist())
    other_seed = TrainingPool(ntrex, ["fr"], {"fr": 100}, seed=8)
    assert set(other_seed.items("fr").tolist()) != fr
    assert pool.languages_of(next(iter(ja))) == ["de", "fr", "ja", "zh", "sw"]

    sampler = HybridBatchSampler(pool, batch_size=16, mode="hybrid", alpha=0.5, seed=0)
    for batch in _batches(sampler, 300):
        for ref in batch:
            assert ref.item in pool.items(ref.query_lang)
            assert ref.item in pool.items(ref.passage_lang)
    assert len(sampler) == pool.total_slots // 16
    assert pool.total_slots == 200 + 100 + 30 + 2 * n


def test_items_with_missing_text_are_not_usable(ntrex: ParallelPairs) -> None:
    queries = dict(ntrex.queries)
    queries["fr"] = [text if k % 3 else "" for k, text in enumerate(ntrex.queries["fr"])]
    sparse = ParallelPairs(ntrex.name, ntrex.item_ids, ntrex.groups, queries, ntrex.passages)
    pool = TrainingPool(sparse, ["de", "fr"], {"fr": 50}, seed=0)
    assert len(pool.items("fr")) == 50
    assert all(k % 3 for k in pool.items("fr"))
    sampler = HybridBatchSampler(pool, batch_size=32, mode="xy", alpha=0.0, seed=0)
    refs = [ref for batch in _batches(sampler, 100) for ref in batch]
    assert all(ref.item % 3 for ref in refs)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ddp_shares_are_disjoint_equal_and_concatenate_to_the_global_batch(
    pool: TrainingPool, world_size: int
) -> None:
    ranks = [
        HybridBatchSampler(pool, batch_size=16, mode="hybrid", alpha=0.5, seed=4, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for step in range(30):
        shares = [sampler.local_batch(0, step) for sampler in ranks]
        assert all(len(share) == 16 // world_size for share in shares)
        assert sum(shares, []) == ranks[0].global_batch(0, step)
        items = [ref.item for share in shares for ref in share]
        assert len(set(items)) == len(items)


def test_iterate_yields_each_rank_its_share(pool: TrainingPool) -> None:
    ranks = [HybridBatchSampler(pool, 8, "hybrid", 0.5, seed=4, rank=r, world_size=2) for r in range(2)]
    for (e0, i0, left), (e1, i1, right) in zip(ranks[0].iterate(num_steps=20), ranks[1].iterate(num_steps=20)):
        assert (e0, i0) == (e1, i1)
        assert left + right == ranks[0].global_batch(e0, i0)


def test_deterministic_and_resume_continues_exactly(ntrex: ParallelPairs) -> None:
    pool = TrainingPool(ntrex, ["de", "fr", "ja"], {"de": 20, "fr": 20, "ja": 20}, seed=0)
    make = lambda: HybridBatchSampler(pool, batch_size=8, mode="hybrid", alpha=0.5, seed=9)  # noqa: E731
    sampler = make()
    assert len(sampler) == 7  # 60 slots // 8
    full = list(sampler.iterate(num_steps=25))
    assert full == list(make().iterate(num_steps=25))
    assert [(e, i) for e, i, _ in full[6:9]] == [(0, 6), (1, 0), (1, 1)]
    for start in (3, 7, 12, 20):
        epoch, index, _ = full[start]
        # A fresh sampler (a restarted process) resumes at the saved position.
        assert list(make().iterate(epoch, index, num_steps=25 - start)) == full[start:]
    assert [sampler.position(step) for step in (0, 6, 7, 24)] == [(0, 0), (0, 6), (1, 0), (3, 3)]
    assert list(make().iterate(*sampler.position(12), num_steps=13)) == full[12:]
    # Epochs are not copies of each other.
    assert sampler.global_batch(0, 0) != sampler.global_batch(1, 0)


def test_different_seeds_give_different_batches(pool: TrainingPool) -> None:
    a = HybridBatchSampler(pool, 16, "hybrid", 0.5, seed=0)
    b = HybridBatchSampler(pool, 16, "hybrid", 0.5, seed=1)
    assert [a.global_batch(0, k) for k in range(10)] != [b.global_batch(0, k) for k in range(10)]
    differing = sum(a.global_batch(0, k) != b.global_batch(0, k) for k in range(10))
    assert differing == 10


def test_describe_reports_the_configuration(ntrex: ParallelPairs) -> None:
    pool = TrainingPool(ntrex, ["de", "ja"], {"ja": 40}, seed=0)
    sampler = HybridBatchSampler(pool, 16, "xy", alpha=0.7, seed=0, rank=1, world_size=2)
    info = sampler.describe()
    assert info["languages"] == ["de", "ja"]
    assert info["items_per_language"] == {"de": len(ntrex), "ja": 40}
    assert info["multilingual_items"] == 40
    assert info["batches_per_epoch"] == (len(ntrex) + 40) // 16 == len(sampler)
    assert info["expected_xx_share"] == 0.0  # xy mode ignores alpha
    assert info["local_batch_size"] == 8


# ---- configuration -> pool ------------------------------------------------------------------


def test_pool_from_config_resolves_languages_and_caps(ntrex: ParallelPairs) -> None:
    cfg = DataConfig(languages=["deu", "zho_Hans", "arb"], max_pairs_per_language=100, pairs_per_language={"ara": 20})
    pool = TrainingPool.from_config(ntrex, cfg)
    assert pool.languages == ["de", "zh", "ar"]
    assert pool.sizes == {"de": 100, "zh": 100, "ar": 20}
    assert pool.seed == cfg.split_seed

    first = TrainingPool.from_config(ntrex, DataConfig(num_languages=3))
    assert first.languages == ["de", "fr", "ja"]
    assert TrainingPool.from_config(ntrex, DataConfig()).languages == ntrex.languages


def test_samplers_from_config(ntrex: ParallelPairs) -> None:
    pool = TrainingPool.from_config(ntrex, DataConfig(num_languages=2))
    sampler = HybridBatchSampler.from_config(pool, BatchConfig(mode="xx", alpha=0.2, batch_size=8), seed=0)
    assert sampler.alpha == 1.0 and sampler.batch_size == 8


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (DataConfig(num_languages=7), "data.num_languages=7 but source 'ntrex-sample' has 6 languages"),
        (DataConfig(languages=["de", "ko"]), r"data.languages: language 'ko' is not available .*'sw'\]"),
        (DataConfig(languages=["de", "notalanguage"]), "data.languages: language 'notalanguage'"),
        (DataConfig(languages=["de", "deu"]), "listed more than once"),
        (DataConfig(num_languages=2, pairs_per_language={"ja": 5}), r"data.pairs_per_language\['ja'\]"),
        (DataConfig(pairs_per_language={"xx-bogus": 5}), "data.pairs_per_language: language 'xx-bogus'"),
    ],
)
def test_pool_from_config_errors_name_the_field(ntrex: ParallelPairs, cfg: DataConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingPool.from_config(ntrex, cfg)


# ---- impossible configurations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("languages", "caps", "kwargs", "message"),
    [
        (["de"], {}, dict(mode="xy"), "need at least 2 languages"),
        (["de"], {}, dict(mode="hybrid", alpha=0.5), "need at least 2 languages"),
        (["de", "fr"], {"de": 1, "fr": 1}, dict(mode="xx"), "no training language has the 2 usable items"),
        (["de", "fr"], {"de": 3, "fr": 3}, dict(mode="xx", world_size=4), r"the 4 usable items .*'de': 3"),
        (["de", "fr"], {"fr": 10}, dict(mode="xy"), "only 10 items are usable in 2 or more languages"),
        (["de", "fr"], {}, dict(batch_size=1), "batch_size=1 must be an integer >= 2"),
        (["de", "fr"], {}, dict(alpha=1.5), r"alpha=1.5 must lie in \[0, 1\]"),
        (["de", "fr"], {}, dict(alpha=-0.1), r"alpha=-0.1 must lie in \[0, 1\]"),
        (["de", "fr"], {}, dict(mode="mixed"), "batching mode 'mixed'"),
        (["de", "fr"], {}, dict(world_size=3), "batch_size=16 is not divisible by world_size=3"),
        (["de", "fr"], {}, dict(world_size=2, rank=2), r"rank=2 must be in \[0, world_size=2\)"),
        (["de", "fr"], {}, dict(seed=-1), "seed=-1 must be a non-negative integer"),
    ],
)
def test_impossible_sampler_configs_fail_clearly(
    ntrex: ParallelPairs, languages: list[str], caps: dict, kwargs: dict, message: str
) -> None:
    pool = TrainingPool(ntrex, languages, caps, seed=0)
    args = dict(batch_size=16, mode="hybrid", alpha=0.5, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        HybridBatchSampler(pool, **args)


def test_single_language_pool_is_fine_for_pure_xx(ntrex: ParallelPairs) -> None:
    pool = TrainingPool(ntrex, ["ja"], {}, seed=0)
    for mode, alpha in (("xx", 0.0), ("hybrid", 1.0)):
        sampler = HybridBatchSampler(pool, 16, mode, alpha, seed=0)
        assert all(is_monolingual(b) and b[0].query_lang == "ja" for b in _batches(sampler, 20))


@pytest.mark.parametrize(
    ("languages", "caps", "message"),
    [
        ([], {}, "needs at least one language"),
        (["de", "ko"], {}, r"languages \['ko'\] are not in source 'ntrex-sample'"),
        (["de", "de"], {}, r"\['de'\] are listed more than once"),
        (["de"], {"fr": 3}, r"caps name languages \['fr'\]"),
        (["de"], {"de": -1}, r"caps\['de'\] = -1"),
        (["de"], {"de": 2.5}, r"caps\['de'\] = 2.5"),
    ],
)
def test_bad_pools_fail_clearly(ntrex: ParallelPairs, languages: list[str], caps: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingPool(ntrex, languages, caps, seed=0)


def test_misaligned_pairs_are_rejected(ntrex: ParallelPairs) -> None:
    passages = dict(ntrex.passages) | {"fr": ntrex.passages["fr"][:-1]}
    broken = ParallelPairs(ntrex.name, ntrex.item_ids, ntrex.groups, ntrex.queries, passages)
    with pytest.raises(ValueError, match=r"passages\['fr'\] has \d+ texts but there are \d+ items"):
        TrainingPool(broken, ["de", "fr"], {}, seed=0)


def test_positions_outside_an_epoch_are_rejected(pool: TrainingPool) -> None:
    sampler = HybridBatchSampler(pool, 16, "hybrid", 0.5, seed=0)
    with pytest.raises(ValueError, match=r"index=\d+ must be in \[0, \d+\)"):
        sampler.global_batch(0, len(sampler))
    with pytest.raises(ValueError, match="epoch=-1"):
        sampler.global_batch(-1, 0)
    with pytest.raises(ValueError, match="non-empty batch"):
        is_monolingual([])
    assert np.all(np.diff(pool.items("de")) > 0)


def test_on_the_registered_ntrex_source() -> None:
    """All of NTREX-128 through the data registry, once that module exists."""
    registry = pytest.importorskip("hybridir.data.registry")
    pairs = registry.load_train_source("ntrex")
    with pytest.raises(ValueError, match=f"data.num_languages=200 but source '{pairs.name}' has"):
        TrainingPool.from_config(pairs, DataConfig(num_languages=200))
    pool = TrainingPool.from_config(pairs, DataConfig(num_languages=10, max_pairs_per_language=500))
    assert pool.languages == pairs.languages[:10]
    assert set(pool.sizes.values()) == {500}
    sampler = HybridBatchSampler(pool, batch_size=32, mode="hybrid", alpha=0.5, seed=0, rank=1, world_size=2)
    for _, _, share in sampler.iterate(num_steps=100):
        assert len(share) == 16 and len({ref.item for ref in share}) == 16
        assert all(ref.item in pool.items(ref.query_lang) for ref in share)
        assert all(ref.item in pool.items(ref.passage_lang) for ref in share)


# ---- languages with fewer usable items than batch_size: smaller X-X batches ----------------


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_xx_batch_size_is_continuous_at_batch_size(ntrex: ParallelPairs, offset: int, world_size: int) -> None:
    batch_size = 16
    items = batch_size + offset
    pool = TrainingPool(ntrex, ["de", "fr", "ja"], {"de": 40, "fr": items, "ja": 40}, seed=0)
    ranks = [
        HybridBatchSampler(pool, batch_size, "hybrid", alpha=0.5, seed=2, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    # min(batch_size, items) rounded down to a multiple of world_size: 15 | 14 below, 16 at and above.
    expected = {(-1, 1): 15, (-1, 2): 14}.get((offset, world_size), batch_size)
    assert ranks[0].xx_batch_size("fr") == expected
    assert ranks[0].xx_batch_size("de") == batch_size
    assert "fr" in ranks[0].describe()["xx_languages"]
    assert len(ranks[0]) < 300  # several epochs
    fr_batches = 0
    for epoch, index, share in ranks[0].iterate(num_steps=300):
        batch = ranks[0].global_batch(epoch, index)
        shares = [share] + [sampler.local_batch(epoch, index) for sampler in ranks[1:]]
        assert sum(shares, []) == batch
        assert {len(share) for share in shares} == {len(batch) // world_size}
        assert len({ref.item for ref in batch}) == len(batch)
        if is_monolingual(batch):
            assert len(batch) == ranks[0].xx_batch_size(batch[0].query_lang)
            assert all(ref.item in pool.items(ref.query_lang) for ref in batch)
            fr_batches += batch[0].query_lang == "fr"
        else:
            assert len(batch) == batch_size
    assert fr_batches > 10  # weight ~ items / (items + 80) of the ~150 X-X batches


@pytest.mark.parametrize(
    ("items", "world_size", "expected"),
    [(1, 1, 0), (2, 1, 2), (3, 1, 3), (1, 2, 0), (2, 2, 2), (3, 2, 2), (3, 4, 0), (4, 4, 4), (7, 4, 4)],
)
def test_smallest_xx_batch_has_two_pairs_and_one_per_rank(
    ntrex: ParallelPairs, items: int, world_size: int, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    pool = TrainingPool(ntrex, ["de", "fr"], {"de": 30, "fr": items}, seed=0)
    with caplog.at_level(logging.WARNING, logger="hybridir.batching"):
        sampler = HybridBatchSampler(pool, 16, "xx", seed=1, world_size=world_size)
    assert sampler.min_xx_batch_size == max(2, world_size)
    assert sampler.xx_batch_size("fr") == expected
    assert ("fr" in sampler.describe()["xx_languages"]) == bool(expected)
    # A language left without X-X batches is said so, not hidden.
    warned = [record.getMessage() for record in caplog.records]
    assert any("['fr']" in message and "get no X-X batches" in message for message in warned) == (expected == 0)
    batches = [sampler.global_batch(*sampler.position(step)) for step in range(400)]
    sizes = {len(batch) for batch in batches if batch[0].query_lang == "fr"}
    assert sizes == ({expected} if expected else set())


def test_xx_batch_size_of_an_unknown_language_fails_clearly(pool: TrainingPool) -> None:
    sampler = HybridBatchSampler(pool, 16, "hybrid", 0.5, seed=0)
    with pytest.raises(KeyError, match="'ko' is not a training language"):
        sampler.xx_batch_size("ko")


def _digest(batches: list[list[PairRef]]) -> str:
    text = "|".join(";".join(f"{r.item}:{r.query_lang}:{r.passage_lang}" for r in batch) for batch in batches)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Digests of batches drawn by the sampler of commit e832f1d (before smaller X-X batches), on
# positions (0, 0..7) and (3, 5): global batches, then every rank's share in rank order.
_BEFORE_REDUCED_XX = {
    "full_pools": ({}, dict(batch_size=16, mode="hybrid", alpha=0.5, seed=4, world_size=2),
                   "ba37d3fd48cf2ea0", "3cafab097003b251"),
    "zero_shot_language": ({"ar": 0, "sw": 1}, dict(batch_size=32, mode="hybrid", alpha=0.5, seed=7, world_size=2),
                           "10b09e8d21e753a9", "c18601f00bf7d857"),
    "caps_at_or_above_batch_size": ({"de": 200, "fr": 100, "ja": 50, "zh": 50, "ar": 0, "sw": 1},
                                    dict(batch_size=16, mode="xx", alpha=1.0, seed=5, world_size=1),
                                    "e960873b233c65d3", "e960873b233c65d3"),
}


@pytest.mark.parametrize("name", sorted(_BEFORE_REDUCED_XX))
def test_configs_without_a_reduced_language_draw_the_same_batches_as_before(ntrex: ParallelPairs, name: str) -> None:
    caps, kwargs, global_digest, shares_digest = _BEFORE_REDUCED_XX[name]
    pool = TrainingPool(ntrex, ntrex.languages, caps, seed=0)
    ranks = [HybridBatchSampler(pool, rank=r, **kwargs) for r in range(kwargs["world_size"])]
    assert all(ranks[0].xx_batch_size(lang) in (0, kwargs["batch_size"]) for lang in pool.languages)
    positions = [(0, index) for index in range(8)] + [(3, 5)]
    assert _digest([ranks[0].global_batch(*position) for position in positions]) == global_digest
    assert _digest([sampler.local_batch(*position) for position in positions for sampler in ranks]) == shares_digest


def test_a_reduced_language_changes_only_xx_batches(ntrex: ParallelPairs) -> None:
    pool = TrainingPool(ntrex, ntrex.languages, {"sw": 10}, seed=0)
    sampler = HybridBatchSampler(pool, batch_size=16, mode="hybrid", alpha=0.5, seed=3)
    batches = [sampler.global_batch(0, index) for index in range(20)]
    cross = [index for index, batch in enumerate(batches) if not is_monolingual(batch)]
    # The same positions were X-Y, with these very batches, at commit e832f1d.
    assert cross == [3, 4, 5, 8, 12, 14, 15, 17, 19]
    assert _digest([batches[index] for index in cross]) == "0afcfcc4a9ea32b0"


# ---- exposure: what each language trained on ------------------------------------------------


def _count_exposure(batches: list[list[PairRef]], languages: list[str]) -> dict[str, dict[str, int]]:
    counts = {lang: dict.fromkeys(EXPOSURE_FIELDS, 0) for lang in languages}
    for batch in batches:
        if is_monolingual(batch):
            counts[batch[0].query_lang]["xx_batches"] += 1
            counts[batch[0].query_lang]["xx_pairs"] += len(batch)
        else:
            for ref in batch:
                counts[ref.query_lang]["xy_query_pairs"] += 1
                counts[ref.passage_lang]["xy_passage_pairs"] += 1
    return counts


@pytest.mark.parametrize(("start", "steps"), [((0, 0), 60), ((1, 3), 25), ((0, 0), 0)])
def test_exposure_counts_the_batches_the_ranks_train_on(
    ntrex: ParallelPairs, start: tuple[int, int], steps: int
) -> None:
    # A reduced (sw: 11 -> 10 per X-X batch on 2 ranks) and a zero-shot (ar) language.
    pool = TrainingPool(ntrex, ntrex.languages, {"de": 30, "fr": 20, "ja": 30, "zh": 20, "ar": 0, "sw": 11}, seed=0)
    ranks = [HybridBatchSampler(pool, 16, "hybrid", 0.7, seed=6, rank=r, world_size=2) for r in range(2)]
    streams = [sampler.iterate(*start, num_steps=steps) for sampler in ranks]
    trained = [left + right for (_, _, left), (_, _, right) in zip(*streams)]
    assert len(trained) == steps
    assert len(ranks[0]) < 60  # so the 60-step case crosses an epoch boundary
    exposure = ranks[1].exposure(steps, *start)  # any rank: the counts are of the global batches
    assert isinstance(exposure, Exposure) and (exposure.num_steps, exposure.start_epoch) == (steps, start[0])
    expected = _count_exposure(trained, pool.languages)
    assert {lang: vars(counts) for lang, counts in exposure.per_language.items()} == expected
    assert exposure.per_language["ar"] == LanguageExposure(0, 0, 0, 0)
    if steps:
        assert exposure.per_language["sw"].xx_batches > 0
        assert exposure.per_language["sw"].xx_pairs == 10 * exposure.per_language["sw"].xx_batches
        assert sum(c.xx_pairs + c.xy_query_pairs for c in exposure.per_language.values()) == sum(map(len, trained))

    flat = exposure.as_flat_dict()
    assert set(flat) == {f"exposure/{lang}/{field}" for lang in pool.languages for field in EXPOSURE_FIELDS}
    assert all(type(value) is int for value in flat.values())  # plain ints survive JSON and the study's filter
    assert flat["exposure/sw/xx_pairs"] == expected["sw"]["xx_pairs"]


def test_exposure_rejects_bad_arguments(pool: TrainingPool) -> None:
    sampler = HybridBatchSampler(pool, 16, "hybrid", 0.5, seed=0)
    with pytest.raises(ValueError, match="num_steps=-1 must be a non-negative integer"):
        sampler.exposure(-1)
    with pytest.raises(ValueError, match=r"index=\d+ must be in \[0, \d+\)"):
        sampler.exposure(5, 0, len(sampler))
