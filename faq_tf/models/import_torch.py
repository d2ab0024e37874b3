"""Imports a torchvision `state_dict` into faq_tf's torchvision-topology Keras models.

    python -m faq_tf.models.import_torch --model=resnet50 \
        --weights=resnet50-0676ba61.pth --output=weights/resnet50.h5

or, from Python, `import_torch_weights("resnet50", "resnet50-0676ba61.pth")`. The Keras
models name every layer that holds weights after its torchvision module
(`faq_tf.models.torch_style`), so each tensor `module.path.param` goes to the layer
`module_path`:

- Conv2D: weight (out, in, kh, kw) -> kernel (kh, kw, in, out); bias as is.
- Dense: weight (out, in) -> kernel (in, out). After a Flatten of an H x W x C map the
  rows are reordered from PyTorch's C-H-W flatten order to Keras's H-W-C.
- BatchNormalization: weight, bias, running_mean, running_var -> gamma, beta,
  moving_mean, moving_variance (num_batches_tracked is not used).

A tensor without a layer, a layer without its tensors, or a tensor of the wrong shape is a
`TorchImportError` that names it. `.safetensors` files are read with numpy alone; `.pth`
files need torch (`pip install 'faq_tf[torch]'`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

import numpy as np

from faq_tf.compat import keras

__all__ = ["TorchImportError", "import_torch_weights", "load_torch_weights", "read_state_dict"]

# Training-only parts of torchvision models that the evaluation-form Keras models leave out.
IGNORED_PREFIXES = ("AuxLogits.",)
_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class TorchImportError(ValueError):
    """A torchvision state_dict that does not fit the Keras model (names the tensors)."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch state_dict as numpy arrays, in the file's order.

    Args:
      path: a `.safetensors` file (read without torch), or a `.pth`/`.pt`/`.bin` file written
        by `torch.save` (needs torch; a checkpoint dict holding "state_dict" or "model" is
        unwrapped, and DataParallel's "module." prefixes are dropped).

    Raises:
      FileNotFoundError: if the file does not exist.
      TorchImportError: if it is not a readable state_dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file. Download torchvision's weights first (see docs/paper.md).")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    if not path.endswith((".pth", ".pt", ".bin")):
        raise TorchImportError(f"{path}: expected a .pth, .pt, .bin or .safetensors file of a PyTorch state_dict")
    return _read_pth(path)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise TorchImportError(f"{path}: not a safetensors file (bad header length); download it again")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise TorchImportError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        if end > len(data):
            raise TorchImportError(f"{path}: tensor {name} lies past the end of the file (truncated?)")
        raw = data[begin:end]
        if entry["dtype"] == "BF16":
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif entry["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, _SAFETENSORS_DTYPES[entry["dtype"]])
        else:
            raise TorchImportError(f"{path}: tensor {name} has dtype {entry['dtype']}, which faq_tf does not read")
        tensors[name] = array.reshape(entry["shape"]).copy()
    return tensors


def _read_pth(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise TorchImportError(
            f"{path}: reading .pth files needs torch: pip install 'faq_tf[torch]' (or convert the file to "
            ".safetensors, which faq_tf reads without torch)"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or foreign file
        raise TorchImportError(f"{path}: torch.load could not read it ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise TorchImportError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    out = {}
    for name, value in obj.items():
        if not hasattr(value, "detach"):
            raise TorchImportError(f"{path}: entry {name} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        out[name.removeprefix("module.")] = (value.float() if value.is_floating_point() else value).numpy()
    return out


def _inbound(model: keras.Model) -> dict[str, list[str]]:
    """Layer name -> names of the layers feeding it (from the functional model's config)."""
    out = {}
    for entry in model.get_config().get("layers", []):
        names = []
        for node in entry.get("inbound_nodes", []):
            for item in node if isinstance(node, list) else []:
                if isinstance(item, list) and item:
                    names.append(item[0])
        out[entry["name"]] = names
    return out


def _dense_kernel(w: np.ndarray, layer: keras.layers.Layer, model: keras.Model, inbound) -> np.ndarray:
    sources = inbound.get(layer.name, [])
    if len(sources) == 1 and isinstance(model.get_layer(sources[0]), keras.layers.Flatten):
        shape = model.get_layer(sources[0]).input_shape[1:]
        if len(shape) == 3 and shape[0] * shape[1] > 1 and w.shape[1] == np.prod(shape):
            h, wd, c = shape
            w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w.T


def _keras_weights(layer, params, model, inbound) -> list[np.ndarray]:
    """The layer's weights (in get_weights order) from its torch module's tensors; every
    tensor of the module must be used."""
    used = {"_module"}

    def take(key):
        if key not in params:
            raise TorchImportError(f"layer {layer.name}: the state_dict has no tensor '{params['_module']}.{key}'")
        used.add(key)
        return params[key]

    out = _convert(layer, take, model, inbound)
    extra = sorted(set(params) - used)
    if extra:
        raise TorchImportError(
            f"unexpected tensors {', '.join(params['_module'] + '.' + e for e in extra)} for Keras layer "
            f"{layer.name} ({type(layer).__name__}{'' if getattr(layer, 'use_bias', True) else ' without bias'})"
        )
    return out


def _convert(layer, take, model, inbound) -> list[np.ndarray]:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        w = take("weight")  # (C * m, 1, kh, kw)
        kh, kw = w.shape[2:]
        c = layer.get_weights()[0].shape[2]
        out = [w.reshape(c, -1, kh, kw).transpose(2, 3, 0, 1)]
    elif isinstance(layer, keras.layers.Conv2D):
        out = [take("weight").transpose(2, 3, 1, 0)]
    elif isinstance(layer, keras.layers.Dense):
        out = [_dense_kernel(take("weight"), layer, model, inbound)]
    elif isinstance(layer, keras.layers.BatchNormalization):
        out = ([take("weight")] if layer.scale else []) + ([take("bias")] if layer.center else [])
        return out + [take("running_mean"), take("running_var")]
    else:
        raise TorchImportError(
            f"layer {layer.name} ({type(layer).__name__}) has weights faq_tf cannot import from torch"
        )
    if getattr(layer, "use_bias", False):
        out.append(take("bias"))
    return out


def load_torch_weights(model: keras.Model, state_dict: str | Mapping[str, np.ndarray]) -> keras.Model:
    """Copies a torchvision state_dict into a faq_tf torchvision-topology model, in place.

    Args:
      model: built by `faq_tf.models` (resnet18/34/50/152, inception_v3, densenet161,
        vgg16_bn, or any model whose weighted layers follow `torch_style.keras_name`).
      state_dict: a path (`read_state_dict`) or a mapping of tensor name -> array.

    Returns:
      The model.

    Raises:
      TorchImportError: naming every missing or extra tensor, or the first mis-shaped one.
    """
    from faq_tf.models.torch_style import keras_name

    source = state_dict if isinstance(state_dict, str) else None
    tensors = read_state_dict(state_dict) if source else dict(state_dict)
    where = f"{source}: " if source else ""
    modules: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith(IGNORED_PREFIXES) or key.endswith("num_batches_tracked"):
            continue
        module, _, param = key.rpartition(".")
        modules.setdefault(keras_name(module), {"_module": module})[param] = np.asarray(value)
    inbound = _inbound(model)
    missing, assignments = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        params = modules.pop(layer.name, None)
        if params is None:
            missing.append(layer.name)
            continue
        try:
            weights = _keras_weights(layer, params, model, inbound)
        except TorchImportError as e:  # name the file too, when there is one
            raise TorchImportError(f"{where}{e}") from None
        for have, want in zip(weights, layer.get_weights()):
            if have.shape != want.shape:
                raise TorchImportError(
                    f"{where}layer {layer.name} of model {model.name}: torch tensor of module {params['_module']} gives "
                    f"shape {have.shape}, the Keras layer needs {want.shape} (another network, or a different "
                    "number of classes?)"
                )
        assignments.append((layer, weights))
    extra = sorted(p["_module"] for p in modules.values())
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no tensors for Keras layers {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"tensors of modules {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''} fit no layer")
        raise TorchImportError(
            f"{where}this state_dict is not model {model.name}'s: {'; '.join(parts)}. Check --model against the file."
        )
    for layer, weights in assignments:
        layer.set_weights([w.astype(v.dtype.as_numpy_dtype) for w, v in zip(weights, layer.weights)])
    return model


def import_torch_weights(
    model: str,
    weights: str,
    output: str | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> keras.Model:
    """Builds a faq_tf torchvision-topology model and loads torchvision weights into it.

    Args:
      model: a key of `faq_tf.models.MODELS` with a torchvision counterpart (resnet18, resnet34,
        resnet50, resnet152, inception_v3, densenet161, vgg16_bn).
      weights: the torchvision state_dict (`.pth` or `.safetensors`).
      output: where to save the Keras weights (`.h5`, for `faq-train --pretrained=`), if given.
      num_classes: classifier outputs; by default those of the file's classifier.
      image_size: square input size (default: the model's own, 224 or 299).

    Returns:
      The Keras model with the imported weights.
    """
    from faq_tf.models import MODELS

    spec = MODELS.get(model)
    if spec is None or spec.torch_classifier is None:
        known = sorted(k for k, s in MODELS.items() if s.torch_classifier)
        raise TorchImportError(f"--model={model} has no torchvision counterpart; use one of {', '.join(known)}")
    tensors = read_state_dict(weights)
    if num_classes is None:
        key = f"{spec.torch_classifier}.weight"
        if key not in tensors:
            raise TorchImportError(f"{weights}: no tensor {key}, so this is not torchvision's {model}")
        num_classes = int(tensors[key].shape[0])
    shape = spec.input_shape if image_size is None else (image_size, image_size, spec.input_shape[2])
    keras_model = spec.builder(input_shape=shape, classes=num_classes)
    try:
        load_torch_weights(keras_model, tensors)
    except TorchImportError as e:
        raise TorchImportError(f"{weights}: {e}") from e
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        keras_model.save_weights(output)
    return keras_model


PROG = "python -m faq_tf.models.import_torch"


def _fail(error: BaseException | str) -> None:
    print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    """Imports --weights into --model and saves --output; exit code 2 with one line on bad input."""
    import time

    from absl import flags

    del argv
    f = flags.FLAGS
    for name in ("model", "weights", "output"):
        if not f[name].value:
            _fail(f"--{name} is required (e.g. --model=resnet50 --weights=resnet50-0676ba61.pth --output=resnet50.h5)")
    if not f.output.endswith(".h5"):
        _fail(f"--output={f.output}: write Keras weights as .h5 (faq-train --pretrained= reads them)")
    start = time.perf_counter()
    try:
        model = import_torch_weights(f.model, f.weights, f.output, f.num_classes, f.image_size)
    except (ValueError, OSError) as e:
        _fail(e)
    print(
        f"imported {f.weights} into {model.name} ({model.count_params():,} parameters, input "
        f"{tuple(model.input_shape[1:])}, {model.output_shape[-1]} classes) in {time.perf_counter() - start:.1f} s; "
        f"saved {f.output}: faq-train --model={f.model} --pretrained={f.output}"
    )


def cli() -> None:
    """`python -m faq_tf.models.import_torch`."""
    from absl import app, flags

    flags.DEFINE_string("model", None, "resnet18, resnet34, resnet50, resnet152, inception_v3, densenet161, vgg16_bn")
    flags.DEFINE_string("weights", None, "torchvision state_dict (.pth, or .safetensors read without torch)")
    flags.DEFINE_string("output", None, "Keras weights to write (.h5), for faq-train --pretrained=")
    flags.DEFINE_integer("num_classes", None, "classifier outputs (default: the file's)")
    flags.DEFINE_integer("image_size", None, "square input size (default: the model's, 224 or 299)")

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            _fail(e)

    app.run(main, flags_parser=parse)


if __name__ == "__main__":
    cli()
