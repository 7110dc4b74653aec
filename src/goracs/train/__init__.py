"""LoRA fine-tuning of a causal LM on a coreset (``goracs finetune``)."""

from goracs.train.encoding import encode_records
from goracs.train.loss import validation_loss
from goracs.train.schedule import lr_factor
from goracs.train.settings import PRESETS, TrainSettings, preset
from goracs.train.trainer import finetune

__all__ = ["PRESETS", "TrainSettings", "encode_records", "finetune", "lr_factor",
           "preset", "validation_loss"]
