# %% [markdown]
# ## Exercises: RMSNorm and RoPE (checked against the 7B model's code)
#
# Both checkers compare your function with `transformers`' LLaMA implementation on random inputs.
# Solutions: `tutorials/solutions/s02_language_model.py`.
#
# **Exercise 1 — RMSNorm** (Zhang & Sennrich 2019). Write `rms_norm(x, weight, eps)`: divide
# `x [..., d]` by the root mean square of its last dimension (plus `eps` inside the root) and
# multiply by `weight [d]`. No mean subtraction, no bias: that is what makes it cheaper than LayerNorm.

# %%
import torch

from xraygpt_lab.exercises import check_rms_norm, check_rope


def rms_norm(x, weight, eps=1e-6):
    # YOUR CODE HERE
    raise NotImplementedError


check_rms_norm(rms_norm)

# %% [markdown]
# What LayerNorm gets from the checker (it subtracts the mean first):

# %%
check_rms_norm(lambda x, weight, eps: torch.nn.functional.layer_norm(x, x.shape[-1:], weight, None, eps))

# %% [markdown]
# **Exercise 2 — rotary position embedding** (Su et al. 2021). Write
# `apply_rope(x, position_ids, base)` for `x [B, heads, T, d]`: rotate each pair of dimensions
# `(i, i + d/2)` by the angle `position · base^(-2i/d)`, i.e.
# `x · cos + rotate_half(x) · sin` with `rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])`.
# (LLaMA's code pairs `i` with `i + d/2`, not the neighbours `2i, 2i+1` of the paper: the
# checker tells you if you used the paper's pairing.)

# %%
def apply_rope(x, position_ids, base=10000.0):
    # YOUR CODE HERE
    raise NotImplementedError


check_rope(apply_rope)

# %% [markdown]
# Question: why does the dot product of a rotated query and a rotated key depend only on the
# *difference* of their positions? (Hint: a rotation by α followed by the transpose of a rotation
# by β is a rotation by α − β.)
