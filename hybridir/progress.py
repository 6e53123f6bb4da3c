"""Progress display: tqdm bars on a terminal, quiet elsewhere.

A bar is useful to a person watching a terminal (``python -m hybridir.evaluate``,
``python -m hybridir.train``) and noise everywhere else: in a log file, in CI, and in the
Ray workers of a study, whose output the driver collects line by line (every redraw of a bar
would become a line). So bars are drawn only when standard error is a terminal, and
``HYBRIDIR_PROGRESS=0`` turns them off even there.

:func:`quiet_libraries` is for processes nobody watches (Ray workers): it keeps the
libraries' own bars and INFO chatter (transformers' "Loading weights" and "Writing model
shards" bars, hybridir's per-batch lines) out of the study's console; warnings still show.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

PROGRESS_ENV = "HYBRIDIR_PROGRESS"
T = TypeVar("T")


def bars_enabled() -> bool:
    """Whether progress bars are drawn here: standard error is a terminal and not switched off."""
    if os.environ.get(PROGRESS_ENV, "").strip() == "0":
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(iterable: Iterable[T] | None = None, *, total: int | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", enabled: bool | None = None) -> tqdm:
    """A tqdm bar that draws only where :func:`bars_enabled` (or ``enabled``) says so; a
    disabled bar is a transparent wrapper, so callers use it unconditionally."""
    show = bars_enabled() if enabled is None else enabled
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=not show, leave=False,
                dynamic_ncols=True)


def write_line(text: str) -> None:
    """Print a line above any open bar (a plain print would be overwritten by the bar's redraw)."""
    tqdm.write(text)


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Keep library chatter below ``level`` in this process: hybridir's INFO lines,
    transformers' progress bars and INFO/WARNING advisories, datasets' and huggingface_hub's bars."""
    logging.getLogger("hybridir").setLevel(level)
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity(max(level, logging.ERROR))
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity(max(level, logging.ERROR))
    except ImportError:  # datasets is only needed for hub training sources
        pass
