"""An analytic FLOP count of a Keras model, layer by layer, per sample.

Conventions (the usual ones, e.g. Kaplan et al. 2020, "Scaling Laws for Neural Language
Models", section 2.1: forward 2 FLOPs per multiply-accumulate, backward twice the forward):

- Conv2D: MACs = out_h * out_w * out_channels * (k_h * k_w * in_channels / groups);
- Dense: MACs = inputs * units (per position, times the positions if the input has more
  than one axis);
- forward FLOPs = 2 * MACs; a training step = 3 * forward (forward, then gradients with
  respect to the inputs and to the weights, each as large as the forward);
- MaxPooling2D / AveragePooling2D: one FLOP per element of each window (comparisons or
  additions), forward only, and counted x3 in training like the rest (an over-count of a
  term that is under 1 % of these nets);
- biases, activations, dropout, flatten and the loss are not counted (elementwise, well
  under 1 % of the convolutions and dense layers here).

A layer with weights that this counter does not know raises an error instead of counting 0.
"""

from __future__ import annotations

import math
from typing import Any

_FREE = {"InputLayer", "Flatten", "Dropout", "Activation", "Reshape", "ReLU", "Softmax"}


def _shape(tensor_shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tuple(tensor_shape)[1:])


def layer_flops(layer: Any) -> int:
    """Forward FLOPs of one layer for one sample."""
    kind = type(layer).__name__
    if kind in ("Conv2D",):
        out_h, out_w, out_c = _shape(layer.output.shape)
        k_h, k_w, in_c_per_group, _ = (int(d) for d in layer.kernel.shape)
        return 2 * out_h * out_w * out_c * k_h * k_w * in_c_per_group
    if kind == "Dense":
        units = int(layer.kernel.shape[1])
        inputs = int(layer.kernel.shape[0])
        positions = math.prod(_shape(layer.output.shape)[:-1]) or 1
        return 2 * positions * inputs * units
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        out = math.prod(_shape(layer.output.shape))
        return out * math.prod(int(p) for p in layer.pool_size)
    if kind in _FREE or not layer.weights:
        return 0
    raise ValueError(f"no FLOP rule for layer {layer.name!r} of type {kind}")


def forward_flops(model: Any) -> dict[str, int]:
    """Layer name -> forward FLOPs per sample, for every layer of a built functional model."""
    return {layer.name: layer_flops(layer) for layer in model.layers}


def training_flops(model: Any, train_samples: int, val_samples: int) -> float:
    """FLOPs of one epoch: 3x forward per training sample, 1x per validation sample."""
    forward = sum(forward_flops(model).values())
    return 3.0 * forward * train_samples + 1.0 * forward * val_samples
