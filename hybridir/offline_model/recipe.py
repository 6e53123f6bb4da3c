"""What the offline model is called and what its built directory holds, plus the package's error.

Every other module of :mod:`hybridir.offline_model` agrees on these facts (the honest display
name, the directory name, the files a complete build has, the recipe version that invalidates
old builds), and :mod:`hybridir.model` imports the display name at import time. They sit in a
module of their own, free of numpy and torch, so that each stage (wheel lookup, parsing,
conversion, caching) can depend on them without depending on one another.
"""

from __future__ import annotations

OFFLINE_MODEL_NAME = "multilingual-e5-small (Q4_0-dequantized)"
UPSTREAM_MODEL = "intfloat/multilingual-e5-small"
MODEL_DIR_NAME = "multilingual-e5-small-q4dq"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
# Bump when the produced directory changes; directories built by an older recipe are rebuilt.
RECIPE_VERSION = 2  # 2: layer_norm_eps written as 1e-12, files readable by all

PROVENANCE_FILE = "hybridir_model.json"
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class OfflineModelError(RuntimeError):
    """The offline model cannot be built or its cached directory is unusable."""
