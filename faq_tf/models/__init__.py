"""Models for faq_tf."""

from faq_tf.models.small_resnet import small_resnet

__all__ = ["small_resnet"]
