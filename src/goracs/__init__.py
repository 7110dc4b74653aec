"""goracs: coreset selection for fine-tuning LLM-based recommenders."""

from goracs.errors import GoracsError

__version__ = "0.1.0"

__all__ = ["GoracsError", "__version__"]
