"""A/A false positive rate and CI coverage of the claim statistics (issue 21, item 3).

Synthetic per-query rows with known truth (no difference between the two cells), pushed through
the same code as the verdicts (``statistic_matrices`` -> ``contrast_inference``, GPQ):

* ``datasets``: a cross-dataset difference (40 + 30 items "x" minus "m"), a seed effect
  shared by the datasets of a run (SD 0.01) plus one per dataset (SD 0.004);
* ``combo``: multilingual minus cross-lingual AP within each run (seed SD 0.01 shared);
* ``worst``: the worst of en / th / el with th clearly worst (-0.1);
* ``worst-tied``: th and el tied (-0.05 each): the argmin switches between runs.

    python bench/claim_statistics_aa.py 400 datasets combo worst worst-tied

prints, per statistic and seeds per cell (2, 3, 5), the rate of p < 0.05 (nominal 5%) and the
coverage of the 95% CI (nominal 95%). Results: docs/metrics.md, "Claim statistics".
"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hybridir.evaluation.claim_statistics import ClaimStatistic, statistic_matrices  # noqa: E402
from hybridir.evaluation.significance import contrast_inference  # noqa: E402

LANGS = ["en", "th", "el"]


def frames(rng, n_items, dataset, seed_sd, lang_shift, items_eff):
    """One run's rows: cross (6 pairs) and multi settings of 3 languages, AP = item effect +
    the run's seed effect + a language shift + noise (SD 0.05)."""
    rows = []
    run = rng.normal(0, seed_sd)
    for q in LANGS:
        for setting, cands in (("cross", [c for c in LANGS if c != q]), ("multi", ["all"])):
            for c in cands:
                ap = items_eff + run + lang_shift.get(q, 0) + rng.normal(0, 0.05, n_items)
                rows.append(pd.DataFrame({"dataset": dataset, "setting": setting, "query_lang": q, "candidate_lang": c,
                                          "query_id": [f"{dataset}{i}" for i in range(n_items)], "ap": ap}))
    return pd.concat(rows, ignore_index=True)


def run(kind, seeds, reps, seed=0):
    """(rate of p < 0.05, CI coverage of 0) over ``reps`` A/A replications."""
    rng = np.random.default_rng(seed)
    rejects = 0; covered = 0
    for r in range(reps):
        eff_a = rng.uniform(0.3, 0.6, 40); eff_b = rng.uniform(0.3, 0.6, 30)
        runs = {}
        for cell in ("a", "b"):
            runs[cell] = {}
            for s in range(seeds):
                if kind == "datasets":
                    shared = rng.normal(0, 0.01)
                    f = pd.concat([frames(rng, 40, "x", 0.004, {}, eff_a + shared), frames(rng, 30, "m", 0.004, {}, eff_b + shared)])
                elif kind == "worst-tied":
                    f = frames(rng, 40, "x", 0.004, {"th": -0.05, "el": -0.05}, eff_a)
                elif kind == "worst":
                    f = frames(rng, 40, "x", 0.004, {"th": -0.1}, eff_a)
                else:
                    f = frames(rng, 40, "x", 0.01, {}, eff_a)
                runs[cell][s] = f
        stat = {"datasets": ClaimStatistic("ap", {"cross": 1.0}, {"x": 1.0, "m": -1.0}),
                "combo": ClaimStatistic("ap", {"multi": 1.0, "cross": -1.0}, {"x": 1.0}),
                "worst": ClaimStatistic("ap", {"cross": 1.0}, {"x": 1.0}, worst_of=tuple(LANGS)),
                "worst-tied": ClaimStatistic("ap", {"cross": 1.0}, {"x": 1.0}, worst_of=tuple(LANGS))}[kind]
        built = statistic_matrices(runs, stat)
        inf = contrast_inference(built.matrices, {"a": 1.0, "b": -1.0}, n_draws=4000, rng=r, item_blocks=built.item_blocks)
        rejects += inf.p_value < 0.05
        covered += inf.ci_low <= 0 <= inf.ci_high
    return rejects / reps, covered / reps


if __name__ == "__main__":
    reps = int(sys.argv[1])
    for kind in sys.argv[2:]:
        for seeds in (2, 3, 5):
            t = time.time(); fpr, cov = run(kind, seeds, reps)
            print(f"{kind:11s} seeds={seeds} reps={reps}: false positive rate {fpr:.3f}, CI coverage {cov:.3f} ({time.time()-t:.0f}s)", flush=True)
