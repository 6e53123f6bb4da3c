"""hybridir: multilingual dense retrieval trained with hybrid (X-X / X-Y) batches.

Layers, each depending only on the ones before it:
data -> batching -> model/loss -> training loop -> evaluation.
"""

__version__ = "0.1.0"
