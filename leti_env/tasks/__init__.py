"""Task sources: each turns a dataset into a list of ``CodeTask``s."""

from .base import CodeTask, DatasetFormatError, extract_code
from .humaneval import load_humaneval
from .mbpp import SPLITS as MBPP_SPLITS
from .mbpp import load_mbpp, mbpp_prompt

__all__ = ["MBPP_SPLITS", "CodeTask", "DatasetFormatError", "extract_code", "load_humaneval", "load_mbpp", "mbpp_prompt"]
