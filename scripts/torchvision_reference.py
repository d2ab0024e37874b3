"""torchvision's own models as the reference for `faq_tf.models.import_torch`.

    python -m scripts.torchvision_reference --out DIR --models resnet18:64,inception_v3:75

For each MODEL:SIZE, builds torchvision's model with random weights, randomized BatchNorm
statistics (so that no BN is an identity) and a classifier scaled to logits of order 1, in
eval mode (Inception-v3 with transform_input=True, as its pretrained weights are used), and
writes to DIR:

  MODEL.pth           its state_dict (torch.save)
  MODEL_pixels.npy    N random images, float pixels in [0, 255], NHWC
  MODEL_logits.npy    torchvision's logits for them, after torchvision's normalization

Runs in its own process without TensorFlow: torchvision and TensorFlow in one process crash
on some machines. Needs the torch extra (`pip install 'faq_tf[torch]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torchvision

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def randomize_batch_norm(model: torch.nn.Module, x: torch.Tensor, generator: torch.Generator) -> None:
    """Random BatchNorm parameters and running statistics of a realistic scale.

    Random affine parameters; running statistics measured on `x` (one forward pass in train
    mode, so that activations stay of order 1 through a deep random network), then perturbed
    at random so that no BN normalizes exactly.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the running statistics become the batch's
        aux = getattr(model, "AuxLogits", None)
        if aux is not None:  # Inception's auxiliary head needs larger inputs; it is not evaluated
            model.AuxLogits = None
        model.train()(x)
        model.AuxLogits = aux if aux is not None else getattr(model, "AuxLogits", None)
        model.eval()
        for m in norms:
            m.momentum = 0.1
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.randn(m.num_features, generator=generator) * 0.2 * std)
            m.running_var.mul_(torch.rand(m.num_features, generator=generator) + 0.5)


def build(name: str, num_classes: int) -> torch.nn.Module:
    """torchvision's model `name`, random weights, eval mode."""
    kwargs = {"weights": None, "num_classes": num_classes}
    if name == "inception_v3":
        kwargs.update(aux_logits=True, transform_input=True, init_weights=True)
    return getattr(torchvision.models, name)(**kwargs).eval()


def reference(name: str, size: int, out: str, images: int = 2, num_classes: int = 1000, seed: int = 0) -> dict:
    """Writes MODEL.pth, MODEL_pixels.npy and MODEL_logits.npy to `out`; returns timings."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build(name, num_classes)
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (images + 4, size, size, 3)).astype(np.float32)
    x = torch.from_numpy(((pixels / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    randomize_batch_norm(model, x[images:], generator)  # statistics from 4 other images
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # logits of order 1, as a trained model's (a step of training stays finite)
        scale = model(x[images:]).abs().max()
        classifier.weight.div_(scale)
        classifier.bias.div_(scale)
    pixels, x = pixels[:images], x[:images]
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(x).numpy()
    seconds = time.perf_counter() - start
    torch.save(model.state_dict(), os.path.join(out, f"{name}.pth"))
    np.save(os.path.join(out, f"{name}_pixels.npy"), pixels)
    np.save(os.path.join(out, f"{name}_logits.npy"), logits)
    return {"model": name, "size": size, "torch_forward_s": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", required=True, help="comma-separated MODEL:SIZE")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--num_classes", type=int, default=1000)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = []
    for item in args.models.split(","):
        name, size = item.split(":")
        results.append(reference(name, int(size), args.out, args.images, args.num_classes))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
