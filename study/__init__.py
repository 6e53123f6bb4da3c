"""The study layer: distributed hyperparameter studies of hybrid-batch training.

Only this package imports Ray Tune; :mod:`hybridir` never imports it. One study =
a grid over scaling axes (every value gets trials, so every curve is complete), Optuna
(TPE, seeded) over the tuned hyperparameters within each grid cell, ASHA pruning per
cell, and one Ray Train DDP run per trial.
"""
