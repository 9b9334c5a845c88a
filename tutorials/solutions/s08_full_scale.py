"""Solution for notebook 08: the FLOPs of one training step when part of the model is frozen."""
from __future__ import annotations


def step_flops(frozen_params, trainable_params, tokens, backward_through_frozen):
    forward = 2 * (frozen_params + trainable_params)  # one multiply-add per weight and token
    activation_grads = 2 * (frozen_params if backward_through_frozen else 0) + 2 * trainable_params
    weight_grads = 2 * trainable_params  # frozen weights get none
    return tokens * (forward + activation_grads + weight_grads)
