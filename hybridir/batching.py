"""Hybrid batches: which parallel items train in which language, and how batches mix them.

Two concepts:

- :class:`TrainingPool` decides which items of a :class:`~hybridir.data.types.ParallelPairs`
  are usable in which training language. A per-language cap (the in-language data size of a
  scaling study) keeps the first ``cap`` items of ONE seeded permutation shared by all
  languages, so a smaller cap is a subset of a larger one and items kept in two languages
  overlap as much as the caps allow (which is what X-Y pairs need).
- :class:`HybridBatchSampler` draws global batches of :class:`PairRef`: X-X (every pair's
  query and passage in one language, one language per batch) with probability ``alpha``, X-Y
  (query and passage in two different languages, drawn per pair) otherwise. No parallel item
  appears twice in a batch, because its translation would be a false in-batch negative.

X-X batch size per language (the data-size axis has no hidden break). A language with ``n``
usable items has X-X batches of ``b(n) = min(batch_size, n)`` rounded down to a multiple of
``world_size`` pairs, so that every rank still gets an equal contiguous share. A language whose
``b(n)`` is below ``max(2, world_size)`` (InfoNCE with in-batch negatives needs two pairs, and
every rank at least one) gets no X-X batches; it is named in a warning and left out of
``describe()["xx_languages"]``. The X-X language is drawn with weight ``n`` among the
languages that get X-X batches, so a step's expected X-X pairs in language ``l`` are
``alpha * n_l / sum(n) * b(n_l)``: they grow continuously with ``n_l`` through ``batch_size``
instead of jumping from 0 to ``alpha * n_l / sum(n) * batch_size`` there.

Before this rule (up to commit e832f1d) a language needed ``batch_size`` usable items for any
X-X batch. Every configuration in which each language has either at least ``batch_size`` or
fewer than ``max(2, world_size)`` usable items (full pools, zero-shot languages with cap 0)
draws bit-identical batches under both rules. Where some language has between those, its X-X
batches are new and the X-X language draws change (the weights are renormalised); X-Y batches
and which batches are X-X (the alpha coin) do not change.

:meth:`HybridBatchSampler.exposure` counts per language what the batches of a run trained on
(X-X batches and pairs, X-Y pairs as query and as passage); ``Exposure.as_flat_dict()`` gives
the ``exposure/<lang>/<field>`` keys a run reports.

A global batch is a pure function of ``(seed, epoch, index)`` and the configuration, so a run
resumed at ``(epoch, index)`` continues with exactly the batches it would have seen, on any
number of ranks, with one exception: the reduced X-X batch sizes (and, for a language with
fewer than ``world_size`` items, whether it gets X-X batches at all) depend on ``world_size``,
so a run with a language of fewer than ``batch_size`` usable items, resumed on a different
number of ranks, may draw different X-X batches from then on.

Numpy only (no torch, no tokenizer): :func:`hybridir.collate.pair_texts` turns a ``PairRef``
into texts with ``pairs.queries[ref.query_lang][ref.item]`` and
``pairs.passages[ref.passage_lang][ref.item]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from hybridir.config import BatchConfig
from hybridir.data.types import ParallelPairs

if TYPE_CHECKING:
    from hybridir.config import DataConfig

log = logging.getLogger(__name__)

Mode = Literal["xx", "xy", "hybrid"]
MODES: tuple[str, ...] = ("xx", "xy", "hybrid")

# Fixed first entropy words keep the pool's permutation and the batch stream independent
# even though both are derived from user seeds that may coincide.
_POOL_STREAM = 0x504F4F4C  # "POOL"
_BATCH_STREAM = 0x42415443  # "BATC"


EXPOSURE_FIELDS: tuple[str, ...] = ("xx_batches", "xx_pairs", "xy_query_pairs", "xy_passage_pairs")


def exposure_key(lang: str, field: str) -> str:
    """The flat key of one exposure count, ``exposure/<lang>/<field>`` (a run's metrics name)."""
    if field not in EXPOSURE_FIELDS:
        raise ValueError(f"exposure field {field!r} is not one of {list(EXPOSURE_FIELDS)}")
    return f"exposure/{lang}/{field}"


@dataclass(frozen=True)
class LanguageExposure:
    """What one language trained on over some global batches (all ranks together)."""

    xx_batches: int = 0  # X-X batches in this language
    xx_pairs: int = 0  # pairs of those batches
    xy_query_pairs: int = 0  # X-Y pairs whose query is in this language
    xy_passage_pairs: int = 0  # X-Y pairs whose passage is in this language


@dataclass(frozen=True)
class Exposure:
    """Per-language exposure of ``num_steps`` global batches from ``(start_epoch, start_index)``."""

    num_steps: int
    start_epoch: int
    start_index: int
    per_language: dict[str, LanguageExposure]

    def as_flat_dict(self) -> dict[str, int]:
        """``{"exposure/<lang>/<field>": count}`` for every training language and field (plain ints)."""
        return {
            exposure_key(lang, name): int(getattr(counts, name))
            for lang, counts in self.per_language.items()
            for name in EXPOSURE_FIELDS
        }


@dataclass(frozen=True)
class PairRef:
    """One training pair: parallel item ``item`` with its query and passage languages."""

    item: int
    query_lang: str
    passage_lang: str

    @property
    def is_monolingual(self) -> bool:
        return self.query_lang == self.passage_lang


def is_monolingual(batch: Sequence[PairRef]) -> bool:
    """True when every pair of ``batch`` has query and passage in one and the same language (X-X)."""
    if not batch:
        raise ValueError("is_monolingual() needs a non-empty batch")
    lang = batch[0].query_lang
    return all(ref.query_lang == lang and ref.passage_lang == lang for ref in batch)


def _check_seed(name: str, seed: int) -> int:
    # numpy's SeedSequence only takes non-negative integers.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name}={seed!r} must be a non-negative integer")
    return int(seed)


class TrainingPool:
    """Which items of ``pairs`` are usable in which of the training ``languages``.

    ``caps[lang]`` is the in-language data size: at most that many items in ``lang``
    (``None`` or a missing key: all items; ``0``: none). Items are taken in the order of one
    permutation seeded by ``seed`` and shared by all languages, so caps nest: the items kept
    under cap ``c`` are a subset of those kept under any cap ``c' >= c``. An item whose query
    or passage text is missing (``None`` or empty) in a language is never usable there.
    """

    def __init__(
        self,
        pairs: ParallelPairs,
        languages: Sequence[str],
        caps: Mapping[str, int | None] | None = None,
        seed: int = 0,
    ) -> None:
        caps = dict(caps or {})
        self.seed = _check_seed("seed", seed)
        self.languages: list[str] = self._check_languages(pairs, languages)
        self.caps: dict[str, int | None] = self._check_caps(caps, self.languages)
        self.pairs = pairs
        self.num_items = len(pairs)

        rng = np.random.default_rng([_POOL_STREAM, self.seed])
        self.order = rng.permutation(self.num_items)  # the shared priority of items under caps
        self._items: dict[str, np.ndarray] = {}
        membership = np.zeros((self.num_items, len(self.languages)), dtype=bool)
        for column, lang in enumerate(self.languages):
            present = self._present(pairs, lang)
            ranked = self.order[present[self.order]]  # present items, in permutation order
            cap = self.caps[lang]
            kept = np.sort(ranked if cap is None else ranked[:cap])
            kept.setflags(write=False)
            self._items[lang] = kept
            membership[kept, column] = True
        self.membership = membership  # [item, language index] -> usable
        self.membership.setflags(write=False)

    @staticmethod
    def _check_languages(pairs: ParallelPairs, languages: Sequence[str]) -> list[str]:
        languages = list(languages)
        if not languages:
            raise ValueError(f"TrainingPool needs at least one language; source {pairs.name!r} has {pairs.languages}")
        duplicates = sorted({lang for lang in languages if languages.count(lang) > 1})
        if duplicates:
            raise ValueError(f"training languages {duplicates} are listed more than once")
        unknown = [lang for lang in languages if lang not in pairs.queries or lang not in pairs.passages]
        if unknown:
            raise ValueError(
                f"languages {unknown} are not in source {pairs.name!r}; available: {pairs.languages}"
            )
        return languages

    @staticmethod
    def _check_caps(caps: dict[str, int | None], languages: list[str]) -> dict[str, int | None]:
        extra = sorted(set(caps) - set(languages))
        if extra:
            raise ValueError(f"caps name languages {extra} that are not training languages {languages}")
        for lang, cap in caps.items():
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 0):
                raise ValueError(f"caps[{lang!r}] = {cap!r} must be None or a non-negative integer")
        return {lang: (None if caps.get(lang) is None else int(caps[lang])) for lang in languages}

    @staticmethod
    def _present(pairs: ParallelPairs, lang: str) -> np.ndarray:
        queries, passages = pairs.queries[lang], pairs.passages[lang]
        for kind, texts in (("queries", queries), ("passages", passages)):
            if len(texts) != len(pairs):
                raise ValueError(
                    f"source {pairs.name!r}: {kind}[{lang!r}] has {len(texts)} texts "
                    f"but there are {len(pairs)} items"
                )
        return np.fromiter((bool(q) and bool(p) for q, p in zip(queries, passages)), dtype=bool, count=len(pairs))

    @classmethod
    def from_config(cls, pairs: ParallelPairs, data_cfg: DataConfig, seed: int | None = None) -> "TrainingPool":
        """Resolve ``data.languages`` / ``data.num_languages`` and the caps of ``data_cfg``.

        ``data.languages`` may use any code scheme (canonicalised with :mod:`hybridir.languages`);
        ``data.num_languages`` takes the first N languages of the source's documented order;
        neither: every language of the source. ``data.pairs_per_language`` overrides
        ``data.max_pairs_per_language`` per language. ``seed`` defaults to ``data.split_seed``,
        so the data subset of a scaling point does not change with the training seed.
        """
        if data_cfg.languages is not None:
            languages = _resolve_codes(pairs, data_cfg.languages, "data.languages")
        elif data_cfg.num_languages is not None:
            if data_cfg.num_languages > len(pairs.languages):
                raise ValueError(
                    f"data.num_languages={data_cfg.num_languages} but source {pairs.name!r} "
                    f"has {len(pairs.languages)} languages"
                )
            languages = pairs.languages[: data_cfg.num_languages]
        else:
            languages = pairs.languages
        caps: dict[str, int | None] = {lang: data_cfg.max_pairs_per_language for lang in languages}
        overrides = _resolve_codes(pairs, list(data_cfg.pairs_per_language), "data.pairs_per_language")
        for code, lang in zip(data_cfg.pairs_per_language, overrides):
            if lang not in caps:
                raise ValueError(
                    f"data.pairs_per_language[{code!r}]: {lang!r} is not a training language {languages}"
                )
            caps[lang] = data_cfg.pairs_per_language[code]
        return cls(pairs, languages, caps, data_cfg.split_seed if seed is None else seed)

    def items(self, lang: str) -> np.ndarray:
        """Sorted (read-only) indices of the items usable in ``lang``."""
        try:
            return self._items[lang]
        except KeyError:
            raise KeyError(f"{lang!r} is not a training language; pool languages: {self.languages}") from None

    @property
    def sizes(self) -> dict[str, int]:
        """Number of usable items per language."""
        return {lang: len(items) for lang, items in self._items.items()}

    @property
    def total_slots(self) -> int:
        """Number of usable (item, language) combinations."""
        return int(self.membership.sum())

    def languages_of(self, item: int) -> list[str]:
        """Training languages in which ``item`` is usable."""
        return [self.languages[j] for j in np.flatnonzero(self.membership[item])]

    def __repr__(self) -> str:
        return f"TrainingPool({self.pairs.name!r}, {len(self.languages)} languages, {self.total_slots} slots)"


def _canonicalizer() -> Callable[[str], str] | None:
    # hybridir.languages is the project's one code scheme; fall back to exact matching
    # while it is absent so that batching does not depend on it being installed first.
    try:
        from hybridir.languages import canonical
    except ImportError:
        return None
    return canonical


def _resolve_codes(pairs: ParallelPairs, codes: Sequence[str], field: str) -> list[str]:
    """Map user codes (any scheme) to the source's language keys, naming ``field`` on failure."""
    canonical = _canonicalizer()
    by_canonical: dict[str, list[str]] = {}
    if canonical is not None:
        for lang in pairs.languages:
            try:
                by_canonical.setdefault(canonical(lang), []).append(lang)
            except (ValueError, LookupError):
                continue
    resolved: list[str] = []
    for code in codes:
        if code in pairs.queries:
            lang = code
        else:
            matches: list[str] = []
            if canonical is not None:
                try:
                    matches = by_canonical.get(canonical(code), [])
                except (ValueError, LookupError):
                    matches = []
            if len(matches) != 1:
                why = "is ambiguous" if matches else "is not available"
                raise ValueError(
                    f"{field}: language {code!r} {why} in source {pairs.name!r}; available: {pairs.languages}"
                )
            lang = matches[0]
        if lang in resolved:
            raise ValueError(f"{field}: language {code!r} names {lang!r}, which is listed more than once")
        resolved.append(lang)
    return resolved


class HybridBatchSampler:
    """Global batches of ``batch_size`` :class:`PairRef` from a :class:`TrainingPool`.

    mode ``"xx"``: every batch is X-X; ``"xy"``: every batch is X-Y; ``"hybrid"``: a batch is
    X-X with probability ``alpha`` and X-Y otherwise (``alpha`` is ignored by the other modes).

    - X-X: one language per batch, drawn with weight = its number of usable items ``n`` among
      the languages that get X-X batches; ``min(batch_size, n)`` rounded down to a multiple of
      ``world_size`` distinct items (a language where that is below ``max(2, world_size)`` gets
      none; see the module docstring).
    - X-Y: distinct items drawn uniformly among those usable in at least two languages; for each,
      an ordered pair of two different languages drawn uniformly among the item's languages.

    ``batch_size`` is the GLOBAL batch; rank ``r`` of ``world_size`` gets the contiguous slice
    ``[r * b/W, (r + 1) * b/W)`` of a batch of ``b`` pairs (``b = B`` except for the reduced X-X
    batches of languages with fewer than ``B`` items), so concatenating the ranks' shares in rank
    order gives the global batch (the gathered InfoNCE loss relies on that order).

    ``len(sampler)`` (global batches per epoch) is the number of usable (item, language) slots
    divided by ``batch_size``, at least 1: an epoch is a nominal unit, since batches draw
    independently of each other.
    """

    def __init__(
        self,
        pool: TrainingPool,
        batch_size: int,
        mode: Mode = "hybrid",
        alpha: float = 0.5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"batching mode {mode!r} is not one of {list(MODES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 2 (in-batch negatives need two pairs)")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha={alpha!r} must lie in [0, 1]")
        if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
            raise ValueError(f"world_size={world_size!r} must be a positive integer")
        if batch_size % world_size:
            raise ValueError(
                f"global batch_size={batch_size} is not divisible by world_size={world_size}; "
                f"every rank needs an equal share"
            )
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r} must be in [0, world_size={world_size})")
        self.pool = pool
        self.batch_size = int(batch_size)
        self.mode: Mode = mode
        self.alpha = BatchConfig.alpha_of(mode, alpha)
        self.seed = _check_seed("seed", seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.local_size = self.batch_size // self.world_size

        sizes = np.array([len(pool.items(lang)) for lang in pool.languages])
        # Smallest X-X batch: two pairs for in-batch negatives, and a multiple of world_size
        # with at least one pair per rank (every rank's share has the same shape for all_gather).
        self.min_xx_batch_size = self.world_size * -(-2 // self.world_size)
        reduced = (np.minimum(sizes, self.batch_size) // self.world_size) * self.world_size
        self._xx_sizes = np.where(reduced >= self.min_xx_batch_size, reduced, 0)  # per pool language
        self._xx_langs = np.flatnonzero(self._xx_sizes)
        # Weights exactly as the old (>= batch_size items) rule computed them, so that configs
        # with no reduced language draw bit-identical batches.
        self._xx_weights = sizes[self._xx_langs] / sizes[self._xx_langs].sum() if self._xx_langs.size else None

        # Ragged per-item language lists (CSR) so that drawing an X-Y pair costs O(1).
        per_item = pool.membership.sum(axis=1)
        self._xy_items = np.flatnonzero(per_item >= 2)
        counts = per_item[self._xy_items]
        self._xy_counts = counts
        self._xy_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._xy_langs = np.nonzero(pool.membership[self._xy_items])[1]  # row-major: grouped by item

        self._check_feasible(sizes)
        self._len = max(1, pool.total_slots // self.batch_size)

    @classmethod
    def from_config(
        cls, pool: TrainingPool, batch_cfg: BatchConfig, seed: int, rank: int = 0, world_size: int = 1
    ) -> "HybridBatchSampler":
        """Sampler for the ``batching`` section of a training config."""
        return cls(pool, batch_cfg.batch_size, batch_cfg.mode, batch_cfg.alpha, seed, rank, world_size)

    def _check_feasible(self, sizes: np.ndarray) -> None:
        needs_xx, needs_xy = self.alpha > 0.0, self.alpha < 1.0
        what = f"mode={self.mode!r}, alpha={self.alpha}, batch_size={self.batch_size}"
        if needs_xx and not self._xx_langs.size:
            raise ValueError(
                f"X-X batches impossible ({what}, world_size={self.world_size}): no training language has "
                f"the {self.min_xx_batch_size} usable items of the smallest X-X batch (in-batch negatives need "
                f"2 pairs, every rank 1); items per language: {dict(zip(self.pool.languages, sizes.tolist()))}"
            )
        if needs_xx:
            no_xx = [lang for lang, b in zip(self.pool.languages, self._xx_sizes) if b == 0]
            if no_xx:
                log.warning(
                    "languages %s have fewer than %d usable items and get no X-X batches",
                    no_xx, self.min_xx_batch_size,
                )  # fmt: skip
            reduced = {
                lang: int(b) for lang, b in zip(self.pool.languages, self._xx_sizes) if 0 < b < self.batch_size
            }
            if reduced:
                log.info("X-X batches smaller than batch_size=%d (pairs per language): %s", self.batch_size, reduced)
        if needs_xy and len(self.pool.languages) < 2:
            raise ValueError(f"X-Y batches impossible ({what}): need at least 2 languages, got {self.pool.languages}")
        if needs_xy and len(self._xy_items) < self.batch_size:
            raise ValueError(
                f"X-Y batches impossible ({what}): only {len(self._xy_items)} items are usable in 2 or more "
                f"languages (caps: {self.pool.caps})"
            )

    def __len__(self) -> int:
        return self._len

    def _check_position(self, epoch: int, index: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch={epoch!r} must be a non-negative integer")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self._len:
            raise ValueError(f"index={index!r} must be in [0, {self._len}) (batches per epoch)")

    def position(self, step: int) -> tuple[int, int]:
        """The ``(epoch, index)`` of the ``step``-th batch (counting from 0) of a run started at (0, 0)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step={step!r} must be a non-negative integer")
        epoch, index = divmod(int(step), self._len)
        return epoch, index

    def global_batch(self, epoch: int, index: int) -> list[PairRef]:
        """The full batch at ``(epoch, index)``: a pure function of it, the seed and the configuration."""
        self._check_position(epoch, index)
        items, query_cols, passage_cols = self._draw(epoch, index)
        languages = self.pool.languages
        return [
            PairRef(int(item), languages[q], languages[p]) for item, q, p in zip(items, query_cols, passage_cols)
        ]

    def _draw(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch at ``(epoch, index)`` as arrays: items, query and passage language columns.

        The one place batches are drawn: :meth:`global_batch` and :meth:`exposure` both read it,
        so exposure counts are the trained batches by construction.
        """
        rng = np.random.default_rng([_BATCH_STREAM, self.seed, int(epoch), int(index)])
        # Always draw the coin so that every batch consumes the stream the same way.
        if rng.random() < self.alpha:
            return self._xx_batch(rng)
        return self._xy_batch(rng)

    def _xx_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        column = int(rng.choice(self._xx_langs, p=self._xx_weights))
        # Generator.choice without replacement is O(batch size) on large pools (Floyd's algorithm).
        candidates = self.pool.items(self.pool.languages[column])
        items = rng.choice(candidates, size=int(self._xx_sizes[column]), replace=False)
        columns = np.full(len(items), column)
        return items, columns, columns

    def _xy_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = rng.choice(len(self._xy_items), size=self.batch_size, replace=False)
        counts = self._xy_counts[rows]
        first = rng.integers(0, counts)
        second = rng.integers(0, counts - 1)
        second += second >= first  # a uniform draw among the other languages of the item
        starts = self._xy_offsets[rows]
        return self._xy_items[rows], self._xy_langs[starts + first], self._xy_langs[starts + second]

    def local_batch(self, epoch: int, index: int) -> list[PairRef]:
        """This rank's contiguous, equal and disjoint share of :meth:`global_batch`."""
        batch = self.global_batch(epoch, index)
        share = len(batch) // self.world_size  # exact: every batch size is a multiple of world_size
        return batch[self.rank * share : (self.rank + 1) * share]

    def xx_batch_size(self, lang: str) -> int:
        """Pairs of an X-X batch in ``lang`` (0: the language gets no X-X batches)."""
        try:
            column = self.pool.languages.index(lang)
        except ValueError:
            raise KeyError(f"{lang!r} is not a training language; pool languages: {self.pool.languages}") from None
        return int(self._xx_sizes[column])

    def exposure(self, num_steps: int, start_epoch: int = 0, start_index: int = 0) -> Exposure:
        """Per-language exposure of the ``num_steps`` global batches from ``(start_epoch, start_index)``.

        The batches :meth:`iterate` yields from that position (all ranks together): per language,
        X-X batches and their pairs, and X-Y pairs with the query or the passage in it. A run
        of ``max_steps`` steps from the start, resumed or not, trained on ``exposure(max_steps)``.
        """
        self._check_position(start_epoch, start_index)
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
            raise ValueError(f"num_steps={num_steps!r} must be a non-negative integer")
        width = len(self.pool.languages)
        xx_batches = np.zeros(width, dtype=np.int64)
        xx_pairs = np.zeros(width, dtype=np.int64)
        xy_query = np.zeros(width, dtype=np.int64)
        xy_passage = np.zeros(width, dtype=np.int64)
        epoch, index = int(start_epoch), int(start_index)
        for _ in range(int(num_steps)):
            items, query_cols, passage_cols = self._draw(epoch, index)
            if query_cols[0] == passage_cols[0]:  # X-X (X-Y pairs never share their two languages)
                xx_batches[query_cols[0]] += 1
                xx_pairs[query_cols[0]] += len(items)
            else:
                xy_query += np.bincount(query_cols, minlength=width)
                xy_passage += np.bincount(passage_cols, minlength=width)
            index += 1
            if index == self._len:
                epoch, index = epoch + 1, 0
        per_language = {
            lang: LanguageExposure(int(xx_batches[j]), int(xx_pairs[j]), int(xy_query[j]), int(xy_passage[j]))
            for j, lang in enumerate(self.pool.languages)
        }
        return Exposure(int(num_steps), int(start_epoch), int(start_index), per_language)

    def iterate(
        self, start_epoch: int = 0, start_index: int = 0, num_steps: int | None = None
    ) -> Iterator[tuple[int, int, list[PairRef]]]:
        """Yield ``(epoch, index, local_batch)`` from ``(start_epoch, start_index)`` on.

        Forever, or ``num_steps`` batches. Resuming at a saved ``(epoch, index)`` continues
        exactly the sequence of the uninterrupted run.
        """
        self._check_position(start_epoch, start_index)
        if num_steps is not None and num_steps < 0:
            raise ValueError(f"num_steps={num_steps!r} must be >= 0")
        epoch, index, produced = int(start_epoch), int(start_index), 0
        while num_steps is None or produced < num_steps:
            yield epoch, index, self.local_batch(epoch, index)
            produced += 1
            index += 1
            if index == self._len:
                epoch, index = epoch + 1, 0

    is_monolingual = staticmethod(is_monolingual)

    def describe(self) -> dict:
        """What the sampler does, for run reports."""
        return {
            "mode": self.mode,
            "alpha": self.alpha,
            "expected_xx_share": self.alpha,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "local_batch_size": self.local_size,  # of a full batch; a reduced X-X batch splits the same way
            "min_xx_batch_size": self.min_xx_batch_size,
            "xx_batch_sizes": {self.pool.languages[j]: int(self._xx_sizes[j]) for j in self._xx_langs},
            "languages": list(self.pool.languages),
            "items_per_language": self.pool.sizes,
            "caps": dict(self.pool.caps),
            "xx_languages": [self.pool.languages[j] for j in self._xx_langs],
            "multilingual_items": int(len(self._xy_items)),
            "batches_per_epoch": self._len,
            "seed": self.seed,
            "pool_seed": self.pool.seed,
        }
