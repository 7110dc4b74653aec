"""LoRA fine-tuning of a causal LM on a coreset (``goracs finetune``)."""

from goracs.train.settings import PRESETS, TrainSettings, preset
from goracs.train.trainer import encode_records, finetune, lr_factor, validation_loss

__all__ = ["PRESETS", "TrainSettings", "encode_records", "finetune", "lr_factor",
           "preset", "validation_loss"]
