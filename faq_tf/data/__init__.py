"""Datasets for faq_tf: `get_source` names a dataset, `make_input` batches it for a model."""

from faq_tf.data.datasets import ImageSource, get_source, make_input
from faq_tf.data.fashion_mnist import DatasetNotFoundError

__all__ = ["DatasetNotFoundError", "ImageSource", "get_source", "make_input"]
