"""Calibration of the verdicts' inference: false positive rate and CI coverage, measured.

    python bench/calibration.py                          # simulation, 1000 A/A replications
    python bench/calibration.py --reps 500 --seeds 2 3   # smaller
    python bench/calibration.py --real runs/aa-hybrid-8seeds          # a real many-seed run
    python bench/calibration.py --components-from runs/aa-hybrid-8seeds  # simulate at its components

(1) **Simulation with known truth.** Two cells of one configuration (A/A) with S seeds each,
scored on the same n items. Per-item values (in units of the run statistic, T = mean over
items) are ``x[c, s, i] = mu + item_i + seed_{c,s} + eps_{c,s,i}`` with normal effects at the
variance components measured on real runs (seed SD of the run statistic, residual SD per item;
defaults below, or ``--components-from`` a run directory). Every replication is scored by the
new method (generalized pivotal quantity over the seeds x items components, pooled seed
variance: the default of ``paired_contrast``), by the same with one seed variance per cell on a
Satterthwaite t reference, and by the old two-level bootstrap + sign-flip test
(``method="bootstrap-legacy"``). Printed per method: the false positive rate (a verdict
other than inconclusive: CI excludes 0 and p < 0.05) and the coverage of a 95% CI for a
non-null contrast (true difference = 2 seed SDs of the run statistic, with an item x cell
interaction of the residual's size, so the paired item term is not 0).

(2) **Real A/A** (``--real``): a study of ONE configuration trained with many seeds (its
per-query files under ``RUN/results/per_query``); for k = 2 .. S/2 seeds per group every split
of the seeds into two disjoint groups of k is scored, and the rate of called verdicts (nominal
5%) is printed per statistic, new method beside old. Splits reuse the same seeds, so they are
not independent: the rate is an average over splits of one draw of S seeds, and its sampling
error is larger than a binomial over the number of splits.

No Ray, no torch: numpy / pandas / scipy and hybridir.evaluation.significance only.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridir.evaluation.seed_item_variance import cell_anova  # noqa: E402
from hybridir.evaluation.significance import contrast_inference, item_contributions  # noqa: E402

# (setting, measure, label) of the statistics the default study's claims test.
STATISTICS = [("cross", "ap", "cross mAP"), ("multi", "ap", "multi mAP"), ("mono", "ap", "mono mAP"),
              ("multi", "rank_distance", "rank distance")]

# Seed SD of the run statistic (issue 21: the default study's hybrid cell, 8 seeds) and the
# residual (seed x item) SD per item in run-statistic units, with the number of items, measured
# on the first 2 seeds of /work/runs/aa-hybrid-8seeds (`--components-from` measures all of a
# run's seeds; bench/README.md, "Calibration").
DEFAULT_COMPONENTS = {
    "cross mAP": {"seed_sd": 0.0015, "resid_sd": 0.0095, "n_items": 1190},
    "multi mAP": {"seed_sd": 0.0039, "resid_sd": 0.0066, "n_items": 1190},
    "mono mAP": {"seed_sd": 0.0008, "resid_sd": 0.0123, "n_items": 1190},
    "rank distance": {"seed_sd": 6.1, "resid_sd": 19.2, "n_items": 1190},
}

METHODS = {
    "new (GPQ, pooled seeds)": dict(method="gpq", pool_seeds=True, n_draws=4000),
    "per-cell seeds (Satterthwaite t)": dict(method="satterthwaite", pool_seeds=False),
    "old (two-level bootstrap + sign flip)": dict(method="bootstrap-legacy", n_resamples=1000, n_permutations=999),
}


def simulate_pair(rng: np.random.Generator, n_seeds: int, seed_sd: float, resid_sd: float, n_items: int,
                  effect: float = 0.0, interaction_sd: float = 0.0, item_sd: float | None = None) -> dict:
    """Item matrices D (seeds x items, T = row sum) of two cells A and B.

    The seed effect's SD is set so that the SD of the run statistic T is ``seed_sd`` (its
    residual part ``resid_sd / sqrt(n)`` included). A gets ``effect`` plus a per-item
    interaction of SD ``interaction_sd`` (centred, so the realised items' mean may differ
    from ``effect``: items are a sample)."""
    seed_var = seed_sd ** 2 - resid_sd ** 2 / n_items
    if seed_var < 0:
        raise ValueError(f"seed SD {seed_sd} is below the residual's share {resid_sd / math.sqrt(n_items):.3g}")
    item = rng.normal(0.0, 3 * resid_sd if item_sd is None else item_sd, n_items)  # cancels in the pairing
    out = {}
    for cell, shift in (("A", effect), ("B", 0.0)):
        x = item[None, :] + rng.normal(0.0, math.sqrt(seed_var), (n_seeds, 1)) \
            + rng.normal(0.0, resid_sd, (n_seeds, n_items))
        if cell == "A":
            x = x + shift + (rng.normal(0.0, interaction_sd, n_items)[None, :] if interaction_sd else 0.0)
        out[cell] = x / n_items
    return out


def _called(inference) -> bool:
    """A verdict other than inconclusive for "A > B" or "A < B": CI excludes 0 and p < 0.05."""
    excludes = inference.ci_low > 0 or inference.ci_high < 0
    return bool(excludes and inference.p_value < 0.05)


def simulate(components: dict, seeds: list[int], reps: int, methods: dict, base_seed: int = 0,
             old_reps: int | None = None) -> pd.DataFrame:
    """FPR and coverage per (statistic, seeds, method); the old method (0.1-0.2 s a call
    against 3-6 ms) runs ``old_reps`` replications."""
    rows = []
    all_reps = reps
    for label, comp in components.items():
        for n_seeds in seeds:
            for name, options in methods.items():
                reps = old_reps if (old_reps and options.get("method") == "bootstrap-legacy") else all_reps
                rng = np.random.default_rng([base_seed, n_seeds, zlib.crc32(label.encode())])
                false_pos = covered = 0
                start = time.perf_counter()
                effect = 2 * comp["seed_sd"]
                for rep in range(reps):
                    null = simulate_pair(rng, n_seeds, comp["seed_sd"], comp["resid_sd"], comp["n_items"])
                    false_pos += _called(contrast_inference(null, {"A": 1.0, "B": -1.0}, rng=rep, **options))
                    alt = simulate_pair(rng, n_seeds, comp["seed_sd"], comp["resid_sd"], comp["n_items"],
                                        effect=effect, interaction_sd=comp["resid_sd"])
                    inf = contrast_inference(alt, {"A": 1.0, "B": -1.0}, rng=rep + reps, **options)
                    covered += inf.ci_low <= effect <= inf.ci_high
                rows.append({"statistic": label, "seeds per cell": n_seeds, "method": name,
                             "FPR": false_pos / reps, "coverage": covered / reps, "reps": reps,
                             "seconds": round(time.perf_counter() - start, 1)})
                print(f"  {label}, {n_seeds} seeds, {name}: FPR {false_pos / reps:.3f}, "
                      f"coverage {covered / reps:.3f}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def unequal_spreads(seeds: list[int], ratios=(1, 2, 3), reps: int = 20000, base_seed: int = 0) -> pd.DataFrame:
    """A/A rate of the seed term alone when the two cells' seed SDs differ by ``ratio``:
    pooled (Student t) vs per-cell (Welch) seed variance; vectorised two-sample tests."""
    from scipy import stats

    rows = []
    rng = np.random.default_rng(base_seed)
    for ratio in ratios:
        for n in seeds:
            a, b = rng.normal(size=(reps, n)) * ratio, rng.normal(size=(reps, n))
            va, vb = a.var(ddof=1, axis=1) / n, b.var(ddof=1, axis=1) / n
            est = a.mean(axis=1) - b.mean(axis=1)
            pooled = np.abs(est / np.sqrt(va + vb)) > stats.t.ppf(0.975, 2 * (n - 1))  # equal n: same SE
            welch_df = (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (n - 1))
            welch = np.abs(est / np.sqrt(va + vb)) > stats.t.ppf(0.975, welch_df)
            rows.append({"seed SD ratio": ratio, "seeds per cell": n, "pooled": pooled.mean(), "per cell": welch.mean()})
    return pd.DataFrame(rows)


# --- real runs -----------------------------------------------------------------------------


def load_runs(run_dir: Path, dataset: str | None = None) -> dict[int, pd.DataFrame]:
    """{seed: per-query rows} of a study of one configuration (every trial one seed)."""
    run_dir = Path(run_dir)
    if run_dir.name == "per_query":
        run_dir = run_dir.parent.parent
    from study.results import ResultStore
    from study.spec import load_study
    from study.vocabulary import COMPLETED

    store = ResultStore(run_dir)
    trials = store.trials()
    trials = trials[trials["status"] == COMPLETED] if "status" in trials else trials
    base_seed = load_study(run_dir / "study.yaml").train_config({}).seed
    cells = trials["cell"].dropna().unique() if "cell" in trials else [0]
    if len(cells) > 1:
        raise SystemExit(f"{run_dir}: {len(cells)} cells; an A/A calibration needs a study of ONE configuration")
    runs = {}
    for _, trial in trials.iterrows():
        seed = base_seed if pd.isna(trial.get("seed")) else int(trial["seed"])
        try:
            frame = store.per_query(trial["trial_id"])
        except FileNotFoundError:
            continue
        if dataset is not None:
            frame = frame[frame["dataset"] == dataset]
        if seed in runs:
            raise SystemExit(f"{run_dir}: seed {seed} appears twice")
        runs[seed] = frame
    if len(runs) < 4:
        raise SystemExit(f"{run_dir}: {len(runs)} runs with per-query results; need >= 4 seeds")
    return dict(sorted(runs.items()))


def seed_item_matrix(runs: dict[int, pd.DataFrame], setting: str, measure: str) -> np.ndarray:
    """(seeds x shared items) matrix of each item's share of the run statistic."""
    contributions = [item_contributions(frame, setting, measure) for frame in runs.values()]
    shared = sorted(set.intersection(*(set(c.index) for c in contributions)), key=str)
    return np.vstack([item_contributions(frame, setting, measure, shared).reindex(shared).to_numpy()
                      for frame in runs.values()])


def _splits(n_seeds: int, k: int) -> list[tuple[list[int], list[int]]]:
    """Every unordered pair of disjoint groups of k seeds out of n_seeds."""
    splits = []
    for group_a in itertools.combinations(range(n_seeds), k):
        rest = [i for i in range(n_seeds) if i not in group_a]
        for group_b in itertools.combinations(rest, k):
            if group_a < group_b:
                splits.append((list(group_a), list(group_b)))
    return splits


def split_rate_reference(n_seeds: int, k: int, reps: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """What the split rate of a CALIBRATED test looks like for one set of n_seeds iid runs:
    (mean, 5%, 95% quantile over ``reps`` simulated seed sets) of the rate at which the pooled
    two-sample t-test on run statistics (what the new method reduces to when, as in an A/A,
    the paired question term is ~0) rejects at 0.05 over every split. Scale-free."""
    from scipy import stats

    splits = _splits(n_seeds, k)
    a = np.array([s[0] for s in splits])
    b = np.array([s[1] for s in splits])
    totals = np.random.default_rng(seed).normal(size=(reps, n_seeds))
    xa, xb = totals[:, a], totals[:, b]  # (reps, splits, k)
    pooled = (xa.var(axis=2, ddof=1) + xb.var(axis=2, ddof=1)) / 2
    t = (xa.mean(axis=2) - xb.mean(axis=2)) / np.sqrt(pooled * 2 / k)
    rate = (np.abs(t) > stats.t.ppf(0.975, 2 * (k - 1))).mean(axis=1)
    return float(rate.mean()), float(np.quantile(rate, 0.05)), float(np.quantile(rate, 0.95))


def measured_components(runs: dict[int, pd.DataFrame]) -> dict:
    """Seed SD of the run statistic and residual SD per item (run-statistic units) per statistic."""
    out = {}
    for setting, measure, label in STATISTICS:
        matrix = seed_item_matrix(runs, setting, measure)
        anova = cell_anova(matrix)
        n = matrix.shape[1]
        out[label] = {"seed_sd": math.sqrt(anova.seed_variance), "resid_sd": math.sqrt(anova.ms_resid) * n,
                      "n_items": n}
    return out


def real_aa(runs: dict[int, pd.DataFrame], methods: dict, group_sizes: list[int]) -> pd.DataFrame:
    seeds = list(runs)
    rows = []
    for setting, measure, label in STATISTICS:
        matrix = seed_item_matrix(runs, setting, measure)
        for k in group_sizes:
            splits = _splits(len(seeds), k)
            for name, options in methods.items():
                called = sum(_called(contrast_inference({"A": matrix[a], "B": matrix[b]}, {"A": 1.0, "B": -1.0},
                                                        rng=j, **options))
                             for j, (a, b) in enumerate(splits))
                rows.append({"statistic": label, "seeds per group": k, "splits": len(splits), "method": name,
                             "called": called, "rate": called / len(splits), "nominal": 0.05})
                print(f"  {label}, {k} per group, {name}: {called}/{len(splits)}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, value_columns: list[str], index: list[str]) -> str:
    wide = table.pivot_table(index=index, columns="method", values=value_columns, sort=False)
    methods = list(dict.fromkeys(table["method"]))
    header = "| " + " | ".join(index) + " | " + " | ".join(
        f"{col} {m.split(' (')[0]}" for col in value_columns for m in methods) + " |"
    lines = [header, "|" + "---|" * (len(index) + len(value_columns) * len(methods))]
    for key, row in wide.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        values = [f"{row[(col, m)]:.3f}" for col in value_columns for m in methods]
        lines.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=1000, help="A/A replications per (statistic, seeds) (default 1000)")
    parser.add_argument("--old-reps", type=int, default=300,
                        help="replications for the old method, ~30x slower (default 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5, 8], help="seeds per cell (default 2 3 5 8)")
    parser.add_argument("--statistics", nargs="+", choices=[s[2].replace(" ", "-") for s in STATISTICS],
                        help="simulate only these (default all)")
    parser.add_argument("--components-from", type=Path, metavar="RUN",
                        help="measure the variance components on this many-seed run instead of the defaults")
    parser.add_argument("--real", type=Path, metavar="RUN", help="score every seed split of a real A/A run")
    parser.add_argument("--group-sizes", type=int, nargs="+", metavar="K",
                        help="--real: seeds per group (default 2 .. S/2)")
    parser.add_argument("--dataset", default="xquad-r", help="dataset of the per-query rows (default xquad-r)")
    parser.add_argument("--methods", nargs="+", choices=["new", "per-cell", "old"], default=["new", "per-cell", "old"])
    args = parser.parse_args(argv)
    chosen = {k: v for k, v in METHODS.items()
              if {"new": "new", "per-cell": "per-cell", "old": "old"}[k.split(" ")[0]] in args.methods}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.real:
        runs = load_runs(args.real, args.dataset)
        print(f"\n## Real A/A: {args.real}, {len(runs)} seeds {list(runs)}, dataset {args.dataset}\n")
        comps = measured_components(runs)
        print("| statistic | seed SD of the run statistic | residual SD per item | items |\n|---|---|---|---|")
        for label, comp in comps.items():
            print(f"| {label} | {comp['seed_sd']:.4g} | {comp['resid_sd']:.4g} | {comp['n_items']} |")
        sizes = args.group_sizes or list(range(2, len(runs) // 2 + 1))
        if max(sizes) > len(runs) // 2 or min(sizes) < 2:
            raise SystemExit(f"--group-sizes {sizes}: each must be in [2, {len(runs) // 2}] for {len(runs)} seeds")
        table = real_aa(runs, chosen, sizes)
        print("\nRate of called verdicts (supported or contradicted for A > B) over every split, nominal 0.05:\n")
        print(markdown(table.assign(**{"seeds per group": table["seeds per group"].astype(str) + " ("
                                       + table["splits"].astype(str) + " splits)"}),
                       ["rate"], ["statistic", "seeds per group"]))
        print(f"\nThe splits share {len(runs)} seeds, so one set of seeds moves every rate together. What a "
              "calibrated test gives on one set of iid seeds (pooled t on the run statistics, 4,000 simulated "
              "seed sets; mean and 90% range of the split rate):\n")
        print("| seeds per group | mean | 5% | 95% |\n|---|---|---|---|")
        for k in sizes:
            mean, low, high = split_rate_reference(len(runs), k)
            print(f"| {k} | {mean:.3f} | {low:.3f} | {high:.3f} |")
        return 0
    components = dict(DEFAULT_COMPONENTS)
    if args.components_from:
        components = measured_components(load_runs(args.components_from, args.dataset))
    if args.statistics:
        components = {k: v for k, v in components.items() if k.replace(" ", "-") in args.statistics}
    print("\n## Simulated A/A, variance components:\n")
    print("| statistic | seed SD of the run statistic | residual SD per item | items |\n|---|---|---|---|")
    for label, comp in components.items():
        print(f"| {label} | {comp['seed_sd']:.4g} | {comp['resid_sd']:.4g} | {comp['n_items']} |")
    start = time.perf_counter()
    table = simulate(components, args.seeds, args.reps, chosen, old_reps=args.old_reps)
    old = f" ({args.old_reps} for the old method)" if "old" in args.methods else ""
    print(f"\n{args.reps} replications per row{old} ({time.perf_counter() - start:.0f} s). FPR: called verdicts "
          "under A/A (nominal 0.05); coverage: 95% CI covers a true difference of 2 seed SDs (nominal 0.95).\n")
    print(markdown(table, ["FPR", "coverage"], ["statistic", "seeds per cell"]))
    spreads = unequal_spreads(args.seeds)
    print("\nSeed term alone, cells with unequal seed SDs (A/A rate at nominal 0.05, 20,000 two-sample tests):\n")
    print("| seed SD ratio | seeds per cell | pooled (default) | per cell (Welch) |\n|---|---|---|---|")
    for row in spreads.itertuples(index=False):
        print(f"| {row[0]} | {row[1]} | {row[2]:.3f} | {row[3]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
