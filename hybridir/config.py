"""Validated configuration of one training run (one study trial).

Every knob a study sweeps lives here, so bad values fail with the field's name before any
data is read or any model is loaded. Languages and source names need the data registry and
are checked where it is at hand: ``TrainingPool.from_config`` (training) and ``study/checks.py``
(every cell of a study, before Ray starts).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArticleHoldout(_Strict):
    """A seeded set of XQuAD articles held out of training for evaluation on XQuAD-R.

    The set is ``choose_groups(<XQuAD's 48 article titles>, fraction, seed)``
    (:func:`hybridir.data.xquad.held_out_articles`); XQuAD and XQuAD-R share their titles, so
    the same (fraction, seed) in ``data.holdout_articles`` (training drops them) and in a
    study's ``evaluation.*.held_out_articles`` (evaluation keeps only them) name the same articles.
    """

    fraction: float = Field(..., gt=0.0, lt=1.0, description="share of the 48 XQuAD articles held out")
    seed: int = Field(0, description="seed of the article choice")


class DataConfig(_Strict):
    source: str = Field("ntrex", description="training source in the dataset registry (ntrex, xquad, ...)")
    languages: list[str] | None = Field(None, description="explicit training languages (any code scheme)")
    num_languages: int | None = Field(
        None, ge=1, description="use the first N languages of the source's documented order"
    )
    max_pairs_per_language: int | None = Field(
        None, ge=0, description="in-language data size: cap on training pairs in every language"
    )
    pairs_per_language: dict[str, int] = Field(
        default_factory=dict, description="per-language caps that override max_pairs_per_language"
    )
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="documents held out for validation")
    split_seed: int = 0
    exclude_articles: list[str] = Field(
        default_factory=list,
        description="further documents/articles never trained on, by group name (e.g. the XQuAD articles "
        "MLQA-R shares: Harvard_University, Prime_number)",
    )
    holdout_articles: ArticleHoldout | None = Field(
        None,
        description="XQuAD articles never trained on (dropped from the source before the validation split; "
        "a source without those articles, e.g. NTREX, loses nothing)",
    )

    @model_validator(mode="after")
    def _one_language_spec(self) -> "DataConfig":
        if self.languages is not None and self.num_languages is not None:
            raise ValueError("give either data.languages or data.num_languages, not both")
        if self.languages is not None and len(self.languages) < 1:
            raise ValueError("data.languages is empty")
        for lang, cap in self.pairs_per_language.items():
            if cap < 0:
                raise ValueError(f"data.pairs_per_language[{lang!r}] = {cap} is negative")
        return self


class BatchConfig(_Strict):
    mode: Literal["xx", "xy", "hybrid"] = "hybrid"
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="probability that a batch is X-X (hybrid mode)")
    batch_size: int = Field(16, ge=2, description="global batch size (pairs), split over DDP ranks")

    @property
    def effective_alpha(self) -> float:
        """The share of X-X batches this section trains with (``alpha`` counts in hybrid mode only)."""
        return self.alpha_of(self.mode, self.alpha)

    @staticmethod
    def alpha_of(mode: str, alpha: float) -> float:
        """The one mode -> X-X share rule: xx 1, xy 0, hybrid ``alpha`` (the batch sampler uses it too)."""
        return {"xx": 1.0, "xy": 0.0}.get(mode, float(alpha))


class ModelConfig(_Strict):
    name: str = Field("me5-small-offline", description="preset name, hub model id, or local directory")
    num_layers: int | None = Field(None, ge=1, description="keep only the first N transformer layers")
    pooling: Literal["mean", "cls"] | None = None
    query_prefix: str | None = None
    passage_prefix: str | None = None
    temperature: float = Field(0.05, gt=0.0, le=1.0)
    max_query_length: int = Field(64, ge=8)
    max_passage_length: int = Field(192, ge=8)
    freeze_embeddings: bool = Field(True, description="freeze the word-embedding matrix (CPU speed)")
    train_layers: int | None = Field(
        None,
        ge=1,
        description="partial fine-tuning: train only the top K transformer layers (and pooling); the "
        "embeddings and lower layers are frozen and run without dropout (None: train all layers)",
    )
    activation_cache: str | None = Field(
        None,
        description="directory of the on-disk cache of the frozen lower layers' hidden states "
        "(None: recompute them); only used with train_layers",
    )
    activation_cache_max_gb: float = Field(
        20.0, gt=0.0, description="size limit of the activation cache; beyond it nothing new is cached"
    )


class OptimConfig(_Strict):
    lr: float = Field(2e-5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    warmup_pairs: int | None = Field(
        None, ge=0, description="warmup as training pairs (sets warmup_steps = warmup_pairs / batching.batch_size): "
        "the same share of the data warms up at every batch size"
    )
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0.0)


def _field(section, name: str, default):
    """``section[name]`` of a raw section (dict) or a validated one (model); ``default`` when absent."""
    if isinstance(section, BaseModel):
        return getattr(section, name)
    return section.get(name, default) if isinstance(section, dict) else default


class TrainConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    batching: BatchConfig = Field(default_factory=BatchConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    max_steps: int = Field(100, ge=1)
    max_pairs: int | None = Field(
        None, ge=1, description="training budget in pairs seen (global batches): sets max_steps = max_pairs / "
        "batching.batch_size, so every batch size trains on the same amount of data"
    )
    seed: int = 0
    log_every: int = Field(10, ge=1)
    validate_every: int | None = Field(
        None, ge=1, description="the validation loss (held-out batches) at the logged steps that are multiples "
        "of N and at the last step; None: at every logged step"
    )
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")
    eval_every: int = Field(0, ge=0, description="call TrainCallback.on_evaluate every N steps and at the last step (0: never)")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads per process")

    @model_validator(mode="before")
    @classmethod
    def _pair_budget(cls, data):
        """``max_pairs`` and ``optim.warmup_pairs`` in steps of ``batching.batch_size``: each must be
        a whole number of global batches, and an explicit ``max_steps`` / ``optim.warmup_steps``
        beside them must agree (a config written back out carries both, consistent)."""
        if not isinstance(data, dict):
            return data
        batch_size = _field(data.get("batching"), "batch_size", BatchConfig.model_fields["batch_size"].default)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            return data  # the batching section's own validation names the bad batch size
        data = dict(data)
        pairs = data.get("max_pairs")
        if isinstance(pairs, int) and not isinstance(pairs, bool) and pairs >= 1:
            steps = _steps_of(pairs, batch_size, "max_pairs")
            given = data.get("max_steps")
            if given is not None and given != steps:
                raise ValueError(f"max_steps={given} contradicts max_pairs={pairs} at batching.batch_size={batch_size} "
                                 f"({pairs} / {batch_size} = {steps} steps); give one of them (max_pairs=null: the budget in steps)")
            data["max_steps"] = steps
        optim = data.get("optim")
        warmup_pairs = _field(optim, "warmup_pairs", None)
        if isinstance(warmup_pairs, int) and not isinstance(warmup_pairs, bool) and warmup_pairs >= 0:
            steps = _steps_of(warmup_pairs, batch_size, "optim.warmup_pairs")
            if isinstance(optim, BaseModel):
                given = optim.warmup_steps if "warmup_steps" in optim.model_fields_set else None
                optim = optim.model_dump()
            else:
                optim = dict(optim)
                given = optim.get("warmup_steps")
            if given is not None and given != steps:
                raise ValueError(f"optim.warmup_steps={given} contradicts optim.warmup_pairs={warmup_pairs} at "
                                 f"batching.batch_size={batch_size} ({warmup_pairs} / {batch_size} = {steps} steps); "
                                 "give one of them (optim.warmup_pairs=null: the warmup in steps)")
            optim["warmup_steps"] = steps
            data["optim"] = optim
        return data

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainConfig":
        if self.optim.warmup_steps > self.max_steps:
            raise ValueError(
                f"optim.warmup_steps={self.optim.warmup_steps} exceeds max_steps={self.max_steps}"
            )
        return self


def _steps_of(pairs: int, batch_size: int, field: str) -> int:
    """``pairs`` as whole global batches of ``batch_size``; ValueError naming ``field`` otherwise."""
    if pairs % batch_size:
        raise ValueError(f"{field}={pairs} is not a whole number of batches of batching.batch_size={batch_size} "
                         f"({pairs} / {batch_size} = {pairs / batch_size:g}): pairs seen would differ between batch sizes")
    return pairs // batch_size
