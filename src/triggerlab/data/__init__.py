"""Datasets: in-memory uint8 containers and one loader per on-disk format."""

from triggerlab.data.dataset import DataSplit, ImageDataset, SourceData
from triggerlab.data.prepare import prepare_data
from triggerlab.data.registry import DATASETS, DatasetInfo

__all__ = ["DATASETS", "DataSplit", "DatasetInfo", "ImageDataset", "SourceData", "prepare_data"]
