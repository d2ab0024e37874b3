"""Datasets for faq_tf."""

from faq_tf.data.fashion_mnist import DatasetNotFoundError, load_fashion_mnist

__all__ = ["DatasetNotFoundError", "load_fashion_mnist"]
