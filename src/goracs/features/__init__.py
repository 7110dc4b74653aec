"""Sample features for selection: embeddings and per-sample gradient norms (method.md §2)."""

from goracs.features.embeddings import embed_texts, load_encoder
from goracs.features.gradnorms import GradNormScorer
from goracs.features.pipeline import FeatureSettings, build_features
from goracs.features.scoring_model import LoraSettings, load_scoring_model

__all__ = [
    "FeatureSettings",
    "GradNormScorer",
    "LoraSettings",
    "build_features",
    "embed_texts",
    "load_encoder",
    "load_scoring_model",
]
