"""Data layer: pinned files, one parser per source, a registry of named sets, splits.

``from hybridir.data import load_eval_set, load_train_source`` works; the registry (and with it
every parser) is imported on first use, so importing :mod:`hybridir.data.types` stays cheap.
"""

from __future__ import annotations

import importlib

from hybridir.data.types import ParallelPairs, RetrievalCorpus

_LAZY = {
    "load_eval_set": "hybridir.data.registry",
    "load_train_source": "hybridir.data.registry",
    "list_eval_sets": "hybridir.data.registry",
    "list_train_sources": "hybridir.data.registry",
    "register_eval_set": "hybridir.data.registry",
    "register_train_source": "hybridir.data.registry",
    "split_by_group": "hybridir.data.splits",
    "split_articles": "hybridir.data.splits",
    "check_no_leakage": "hybridir.data.splits",
    "LeakageError": "hybridir.data.splits",
    "DataFile": "hybridir.data.files",
    "DataFileError": "hybridir.data.files",
    "resolve": "hybridir.data.files",
}

__all__ = ["ParallelPairs", "RetrievalCorpus", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
