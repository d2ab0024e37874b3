"""faq_tf: Fine-tuning After Quantization for Keras, with fully integer TFLite export."""

from setuptools import find_packages, setup

setup(
    name="faq_tf",
    version="0.1.0",
    description="FAQ: power-of-two 8/4-bit quantization-aware fine-tuning for Keras models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["faq_tf", "faq_tf.*", "export_tflite", "export_tflite.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        # tfmot 0.8.1 needs Keras 2 (tf_keras) and absl-py 1.x; TF and tf_keras move together.
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16,<2.22",
        "keras>=3.0,<4",  # Keras 3: faq_tf.from_keras3 reads users' Keras 3 models and .keras files
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "tensorflow-datasets>=4.9,<5",
        "absl-py>=1.2,<2",
        "numpy>=1.23,<3",
        "ai-edge-litert>=1.2,<3",
        "flatbuffers>=23.5",  # export_tflite rewrites .tflite files (already a TensorFlow dependency)
        "tensorboard>=2.16,<3",
        "matplotlib>=3.5",  # benchmark and diagnostics plots
    ],
    extras_require={
        "micro": ["tflite-micro"],  # TFLM from Python: --runtime=micro, verify --micro
        # faq_tf.models.import_torch reads .pth files; tests compare with torchvision's own models.
        # (.safetensors files are read without it.)
        "torch": ["torch>=2.1", "torchvision>=0.16"],
        "dev": ["pytest>=8", "ruff>=0.6", "tflite-micro"],
    },
    entry_points={"console_scripts": ["faq-train=faq_tf.train:cli"]},
)
