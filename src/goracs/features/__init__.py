"""Sample features for selection: embeddings and per-sample gradient norms (method.md §2)."""

from goracs.features.embeddings import embed_texts, load_encoder
from goracs.features.gradnorms import (
    GradNormScorer,
    LoraSettings,
    load_scoring_model,
    reference_norms,
)
from goracs.features.pipeline import FeatureSettings, build_features
from goracs.features.samples import (
    ctr_labels,
    embedding_texts,
    load_records,
    render_prompt,
    tokenize_texts,
    training_texts,
)

__all__ = [
    "FeatureSettings",
    "GradNormScorer",
    "LoraSettings",
    "build_features",
    "ctr_labels",
    "embed_texts",
    "embedding_texts",
    "load_encoder",
    "load_records",
    "load_scoring_model",
    "reference_norms",
    "render_prompt",
    "tokenize_texts",
    "training_texts",
]
