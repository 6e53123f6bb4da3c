"""The tensor names of an E5S1 file and the ``BertModel`` state-dict keys they become.

The name table is shared by two stages that must agree on it: the parser checks that a file's
tensor directory lists every expected tensor, and the converter renames each one for
``BertModel``. Holding the table here (plain data, no numpy or torch) gives both one source of
truth without making the format reader depend on the conversion or the other way round.
"""

from __future__ import annotations

_BERT_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


def expected_tensor_names(layers: int) -> list[str]:
    """Every E5S1 tensor name an encoder of ``layers`` layers has (embeddings first)."""
    return list(_BERT_NAMES) + [f"l{i}.{part}" for i in range(layers) for part in _LAYER_NAMES]


def bert_name(e5s1_name: str) -> str:
    """Map an E5S1 tensor name (``emb.word``, ``l3.fi.w``) to its ``BertModel`` state-dict key."""
    if e5s1_name in _BERT_NAMES:
        return _BERT_NAMES[e5s1_name]
    layer, part = e5s1_name.split(".", 1)
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[part]}"
