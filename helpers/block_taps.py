"""Intermediate blocks of the backbone read beside its last feature map (the ``block_taps`` recipe).

A detector of this lab pools only the backbone's last feature map. Work on AI-generated image detection
finds that a pretrained network's intermediate blocks keep more of a generator's low-level trace and
generalise better to unseen generators (Koutlis & Papadopoulos, "Leveraging representations from
intermediate encoder-blocks", ECCV 2024); on this lab's frozen MobileNetV2, a linear probe on six blocks' channel
means and spreads ranks every held-out generator higher than one on the last layer
(``benchmarks/intermediate_features_screen.py``).

:func:`with_block_taps` turns a Keras MobileNetV2 into a backbone whose output map carries, for the last
map and each of :data:`TAPPED_BLOCKS`, the activations and their squares, each block average-pooled down
to the last map's grid. The detector's global-average pooling (``gap``) then gives each block's channel
means and mean squares (its spread), so pooling, the head, fine-tuning (BatchNormalization frozen),
serving and saving work unchanged; the taps add no trainable weights.
"""

from __future__ import annotations

import keras
from keras import layers

TAPPED_BLOCKS = ("block_2_expand_relu", "block_5_expand_relu", "block_9_expand_relu", "block_12_expand_relu",
                 "block_15_expand_relu")
SQUARE_SCALE = 1.0 / 6.0  # MobileNetV2's ReLU6 activations lie in [0, 6]: their squares / 6 do too


def _map_and_square(x, factor: int, name: str) -> list:
    """``x`` and its squares / 6, each average-pooled by ``factor`` (1: left as is)."""
    square = layers.Rescaling(SQUARE_SCALE, name=f"{name}_square_scaled")(layers.Multiply(name=f"{name}_square")([x, x]))
    if factor == 1:
        return [x, square]
    return [layers.AveragePooling2D(factor, name=f"{name}_to_last_grid")(x),
            layers.AveragePooling2D(factor, name=f"{name}_square_to_last_grid")(square)]


def with_block_taps(base: keras.Model, name: str, blocks: tuple[str, ...] = TAPPED_BLOCKS) -> keras.Model:
    """``base`` (the same layers and weights) as a model named ``name`` whose output concatenates the last
    feature map, each of ``blocks`` average-pooled to that map's grid, and the (scaled) squares of all of
    them. Needs an input size for which every block's grid is a multiple of the last one (any multiple of
    32 for MobileNetV2)."""
    grid = int(base.output.shape[1])
    parts = _map_and_square(base.output, 1, "last")
    for block in blocks:
        activations = base.get_layer(block).output
        factor = int(activations.shape[1]) // grid
        if factor * grid != int(activations.shape[1]):
            raise ValueError(f"{block}'s {activations.shape[1]}-pixel grid is not a multiple of the last map's {grid}")
        parts += _map_and_square(activations, factor, block)
    return keras.Model(base.input, layers.Concatenate(name="block_taps")(parts), name=name)
