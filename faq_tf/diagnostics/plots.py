"""PNG plots of faq-train runs: Figure 1 (gradient noise per layer), Figure 2 (similarity bars), curves.

  python -m faq_tf.diagnostics plot runs/fm_w8a8 runs/fm_w4a4 runs/fm_w2a2 --out plots/

reads each run's config.json, metrics.json and diagnostics.json and writes:
  grad_noise_per_layer.png   one line per run (labelled by precision), last recorded epoch
  learning_curves.png        test top-1 and learning rate against epoch, one line per run
  similarity.png             bars from `similarity_bars()` (when pairs are given)
"""

from __future__ import annotations

import json
import os

__all__ = ["plot_runs", "similarity_bars"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read(run_dir: str, name: str) -> dict:
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _label(run_dir: str) -> str:
    config = _read(run_dir, "config.json")
    name = os.path.basename(os.path.normpath(run_dir))
    return f"{config.get('precision', '?')} ({name})" if config else name


def plot_runs(run_dirs: list[str], out_dir: str) -> list[str]:
    """Writes the per-layer gradient-noise and learning-curve PNGs for faq-train runs.

    Args:
      run_dirs: faq-train model_dirs.
      out_dir: where the PNGs go (created).

    Returns:
      The paths written (the gradient-noise plot only if some run recorded grad_noise).

    Raises:
      FileNotFoundError: if a run folder has no metrics.json.
    """
    for d in run_dirs:
        if not os.path.exists(os.path.join(d, "metrics.json")):
            raise FileNotFoundError(f"{d} has no metrics.json: pass faq-train --model_dir folders.")
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    written = []

    noisy = [(d, _read(d, "diagnostics.json").get("grad_noise", {}).get("epochs", [])) for d in run_dirs]
    noisy = [(d, e) for d, e in noisy if e]
    if noisy:
        fig, ax = plt.subplots(figsize=(7, 4))
        for d, epochs in noisy:
            per_layer = epochs[-1]["per_layer"]
            ax.plot(range(1, len(per_layer) + 1), list(per_layer.values()), marker="o", label=_label(d))
        ax.set_xlabel("layer (first conv = 1)")
        ax.set_ylabel("cosine(float step, EMA of quantized step)")
        ax.set_title("Gradient noise from weight quantization (paper Fig. 1)")
        ax.set_ylim(top=1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "grad_noise_per_layer.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(10, 4))
    for d in run_dirs:
        epochs = _read(d, "metrics.json").get("epochs", [])
        xs = [e["epoch"] + 1 for e in epochs if "test_top1" in e]
        ax.plot(xs, [e["test_top1"] for e in epochs if "test_top1" in e], marker="o", label=_label(d))
        ax_lr.semilogy([e["epoch"] + 1 for e in epochs], [e["lr"] for e in epochs], marker=".", label=_label(d))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, "learning_curves.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def similarity_bars(values: dict[str, float], path: str) -> str:
    """Writes a Figure 2 style bar chart of network similarities, e.g.
    {"random init -> trained from scratch": 0.02, "pretrained -> FAQ w4a4": 0.99}.
    """
    plt = _pyplot()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    bars = ax.bar(range(len(values)), list(values.values()), color=["tab:gray", "tab:blue", "tab:green"][: len(values)])
    ax.set_xticks(range(len(values)), list(values.keys()), fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean neuron cosine similarity")
    ax.set_title("Weights before vs after training (paper Fig. 2)")
    for bar, v in zip(bars, values.values()):
        ax.text(bar.get_x() + bar.get_width() / 2, v + 0.02, f"{v:.3f}", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
