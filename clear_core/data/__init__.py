"""Datasets: reading, validation, canonical storage, k-core filtering, splitting, generation."""

from clear_core.data.dataset import Dataset

__all__ = ["Dataset"]
