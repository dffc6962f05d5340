"""Data: raw readers, preprocessing, the processed SequenceData format, splits, long-tail groups, synthetic
data."""

from esrkit.data.sequences import DatasetFormatError, SequenceData

__all__ = ["SequenceData", "DatasetFormatError"]
