"""Training pairs from any Hugging Face ``datasets`` dataset (registered as "hf-pairs").

The dataset is in long form: one row per (item, language) with a query, a passage and an item
id shared by the item's translations. The language comes from a column or is one constant
(a monolingual dataset). Items that are missing in any selected language are dropped, since
:class:`ParallelPairs` needs every item in every language; items keep their first-seen order.
"""

from __future__ import annotations

from hybridir.data.types import ParallelPairs
from hybridir.languages import canonical


def load_hf_pairs(
    path: str,
    *,
    query_column: str = "query",
    passage_column: str = "passage",
    id_column: str = "id",
    language_column: str | None = None,
    language: str | None = None,
    group_column: str | None = None,
    languages=None,
    name: str | None = None,
    split: str = "train",
    data_files=None,
    **load_kwargs,
) -> ParallelPairs:
    """Build ParallelPairs from ``datasets.load_dataset(path, name, split=split, data_files=...)``.

    Give ``language_column`` (codes in any scheme) or a constant ``language``. ``group_column``
    names the document/article column (default: each item is its own group). ``languages``
    selects and orders languages (default: order of first appearance).
    """
    if (language_column is None) == (language is None):
        raise ValueError("hf-pairs: give exactly one of language_column and language")
    constant = canonical(language) if language is not None else None
    import datasets  # deferred: importing it costs seconds and only this loader needs it

    dataset = datasets.load_dataset(path, name, split=split, data_files=data_files, **load_kwargs)
    needed = [query_column, passage_column, id_column, language_column, group_column]
    missing = [column for column in needed if column is not None and column not in dataset.column_names]
    if missing:
        raise ValueError(f"hf-pairs {path}: no column {missing}; the dataset has {dataset.column_names}")

    rows: dict[str, dict[str, tuple[str, str]]] = {}  # lang -> item id -> (query, passage)
    group_of: dict[str, str] = {}
    for row in dataset:
        item_id = str(row[id_column])
        lang = constant or canonical(str(row[language_column]))
        per_language = rows.setdefault(lang, {})
        if item_id in per_language:
            raise ValueError(f"hf-pairs {path}: item {item_id!r} appears twice in language {lang!r}")
        per_language[item_id] = (row[query_column], row[passage_column])
        group_of.setdefault(item_id, str(row[group_column]) if group_column else item_id)

    if languages is None:
        selected = list(rows)
    else:
        selected = [canonical(code) for code in languages]
        absent = [lang for lang in selected if lang not in rows]
        if absent:
            raise ValueError(f"hf-pairs {path}: no rows in languages {absent}; it has {list(rows)}")
    item_ids = [item for item in group_of if all(item in rows[lang] for lang in selected)]
    if not item_ids:
        raise ValueError(f"hf-pairs {path}: no item exists in all of {selected}")
    return ParallelPairs(
        name=f"hf-pairs:{path}",
        item_ids=item_ids,
        groups=[group_of[item] for item in item_ids],
        queries={lang: [rows[lang][item][0] for item in item_ids] for lang in selected},
        passages={lang: [rows[lang][item][1] for item in item_ids] for lang in selected},
    )
