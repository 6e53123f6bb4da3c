"""Variance components of stored runs: the table ``study/run.py --plan`` sizes designs with.

    python bench/variance_components.py /work/runs/aa-hybrid-8seeds     # writes study/costs/variance.json
    python bench/variance_components.py RUN_DIR --output PATH
    python bench/variance_components.py RUN_DIR --add   # add RUN_DIR's datasets to the table
    python bench/variance_components.py RUN_DIR --add --datasets mlqa-r   # only these of RUN_DIR's

``--add`` keeps the table's entries and adds (or replaces) those of RUN_DIR, keyed by dataset,
setting and measure: a study that evaluated a set the table lacks (MLQA-R, AfriQA, ...) adds
its components, and each source run stays named in ``meta.sources``.

Reads a study directory's per-query results (``results/per_query/<trial>.parquet``) and, per
final dataset, LAReQA setting and claim measure, computes the crossed seeds x items components
of :mod:`hybridir.evaluation.seed_item_variance` on the cells with >= 2 seeds (all runs of a cell
that share its configuration: seed re-runs, and the search trial when nothing is tuned):

* ``seed_sd``: the SD over seeds of one cell's run statistic (sqrt of the seed variance, pooled
  over the cells with >= 2 seeds, df = sum (S_c - 1)): what ``design_mdd`` takes as ``seed_sd``;
* ``ms_item`` / ``ms_resid``: the cell's item and residual (seed x item) mean squares (pooled);
* ``item_var_unit``: the paired item term of a contrast per unit of sum(w^2), measured on the
  contrast "trained (the cell's seeds) minus the untrained model" (``results/per_query/zero-shot``)
  and halved (under independent item x configuration effects of equal variance per cell, a
  contrast with weights w has item variance item_var_unit * sum(w^2)). A contrast between two
  trained configurations differs less item by item than training from no training, so this is
  an upper reference; 0 is the lower one (the item effects cancel exactly in an A/A contrast).

The planner (:mod:`study.plan`) reads the JSON; ``--plan --resume DIR`` recomputes it from DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_OUTPUT = REPO_ROOT / "study" / "costs" / "variance.json"


def main(argv=None) -> None:
    from study.plan import variance_components_of_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a study directory with results/per_query")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--add", action="store_true",
                        help="merge into the existing --output table (RUN_DIR's entries win for its datasets)")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="DATASET",
                        help="keep only these final datasets of RUN_DIR (e.g. the ones the table lacks)")
    args = parser.parse_args(argv)
    table = variance_components_of_run(args.run)
    if args.datasets is not None:
        unknown = sorted(set(args.datasets) - {e["dataset"] for e in table["components"]})
        if unknown:
            parser.error(f"--datasets {' '.join(unknown)}: not among {args.run}'s final datasets "
                         f"{sorted({e['dataset'] for e in table['components']})}")
        table["components"] = [e for e in table["components"] if e["dataset"] in args.datasets]
    table["meta"].update({"command": f"python bench/variance_components.py {args.run}" + (" --add" if args.add else "")
                          + (f" --datasets {' '.join(args.datasets)}" if args.datasets else ""),
                          "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    if args.add and args.output.is_file():
        table = merge_tables(json.loads(args.output.read_text()), table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(table, indent=2) + "\n")
    for entry in table["components"]:
        print(f"{entry['dataset']:8s} {entry['setting']:5s} {entry['measure']:13s} seeds {entry['n_seeds']} "
              f"items {entry['n_items']:5d} seed_sd {entry['seed_sd']:.5f} item_var_unit "
              f"{entry['item_var_unit'] if entry['item_var_unit'] is not None else float('nan'):.3g}")
    print(f"wrote {args.output}")


def _key(entry: dict) -> tuple:
    return entry["dataset"], entry["setting"], entry["measure"]


def merge_tables(old: dict, new: dict) -> dict:
    """``old``'s entries plus ``new``'s, ``new`` winning per (dataset, setting, measure); the
    source runs listed in ``meta.sources`` (each run's own meta, with the datasets it gave)."""
    replaced = {_key(e) for e in new["components"]}
    kept = [e for e in old["components"] if _key(e) not in replaced]
    kept_datasets = {e["dataset"] for e in kept}
    sources = []
    for meta in old["meta"].get("sources", [old["meta"]]):
        datasets = meta.get("datasets", sorted({e["dataset"] for e in old["components"]}))
        datasets = [d for d in datasets if d in kept_datasets]
        if datasets:
            sources.append({**meta, "datasets": datasets})
    sources.append({**new["meta"], "datasets": sorted({e["dataset"] for e in new["components"]})})
    meta = {"what": new["meta"]["what"], "run": ", ".join(str(m["run"]) for m in sources), "sources": sources}
    return {"meta": meta, "components": kept + new["components"]}


if __name__ == "__main__":
    main()
