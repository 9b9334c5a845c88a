# %% [markdown]
# ## Exercise: clinical-efficacy F1 from label dicts (checked against `eval.metrics`)
#
# Label the generated and the reference reports with the same labeler, then score them like a
# multi-label classifier (Chen et al. 2020, R2Gen). Write
# `ce_scores(pred_labels, ref_labels, observations)` returning
# `{"micro_precision", "micro_recall", "micro_f1", "macro_f1"}`:
#
# * a label is positive only when it is `1` (`0` negative, `-1` uncertain, `None` not mentioned);
# * micro: pool TP/FP/FN over all observations (precision/recall `None` when undefined, F1 0.0);
# * macro: mean of the per-observation F1s, leaving out observations with no positive on either
#   side (their F1 is undefined).
#
# Solution: `tutorials/solutions/s07_evaluation.py`; library: `eval.metrics.clinical_efficacy`.

# %%
from xraygpt_lab.exercises import check_ce_scores


def ce_scores(pred_labels, ref_labels, observations):
    # YOUR CODE HERE
    raise NotImplementedError


check_ce_scores(ce_scores)

# %% [markdown]
# Question: a model that never mentions a rare finding gets a high *micro* F1 on a dataset where
# that finding is rare. Which of the two averages punishes it, and why do papers report both?
