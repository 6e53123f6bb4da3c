"""Regenerate ``catalog.tsv`` (the pinned data files) from a mirror's MANIFEST.tsv.

    python -m hybridir.data.catalog /path/to/mirror/MANIFEST.tsv

Only the files the loaders read are kept (licences and READMEs stay upstream), so the
catalogue stays small enough to ship inside the package.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import sys
from pathlib import Path

from hybridir.data.files import CATALOG_COLUMNS, CATALOG_PATH, read_manifest

# repo -> path patterns (fnmatch; "*" also crosses "/") of the files the loaders read.
LOADED_FILES: dict[str, tuple[str, ...]] = {
    "google-research-datasets/lareqa": ("xquad-r/*.json", "mlqa-r/*.json"),
    "google-deepmind/xquad": ("xquad.*.json",),
    "MicrosoftTranslator/NTREX": ("DOCUMENT_IDS.tsv", "LANGUAGES.tsv", "NTREX-128/*.txt"),
    "facebookresearch/LASER": ("data/tatoeba/v1/tatoeba.*",),
    "dadelani/sib-200": ("data/annotated/*/train.tsv", "data/annotated/*/dev.tsv", "data/annotated/*/test.tsv"),
    "masakhane-io/afriqa": ("data/queries/*.json", "data/gold_passages/*.json"),
}


def is_loaded(repo: str, path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in LOADED_FILES.get(repo, ()))


def write_catalog(manifest: Path, output: Path = CATALOG_PATH) -> int:
    """Write the loaded files of ``manifest`` to ``output``; returns the number of rows."""
    entries = [e for e in read_manifest(manifest).values() if is_loaded(e.repo, e.path)]
    entries.sort(key=lambda e: (e.repo, e.commit, e.path))
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(CATALOG_COLUMNS)
        for e in entries:
            writer.writerow((e.repo, e.commit, e.path, e.sha256, e.size))
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="MANIFEST.tsv of a data mirror")
    parser.add_argument("--output", type=Path, default=CATALOG_PATH)
    args = parser.parse_args(argv)
    count = write_catalog(args.manifest, args.output)
    print(f"wrote {count} files to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
