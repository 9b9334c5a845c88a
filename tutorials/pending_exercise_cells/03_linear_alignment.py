# %% [markdown]
# ## Exercise: the loss mask (checked against `XrayGPT.prompt_wrap`)
#
# XrayGPT computes the loss on the answer only. Write
# `xraygpt_labels(tokenizer, prompt, target, num_image_tokens, max_target_tokens=160)` returning
# one label per position of the spliced sequence
# `<s> ###Patient: <Img> [N image embeddings] </Img> {instruction} ###Doctor: {target}###`:
#
# * `-100` on BOS, on every prompt token and on the N image positions;
# * the token ids of `target + "###"`, cut at `max_target_tokens` (XrayGPT's `max_txt_len`);
# * no shifting: Hugging Face's loss shifts labels by one itself.
#
# Tokenise pieces with `tokenizer(text, add_special_tokens=False)["input_ids"]`; the prompt holds
# `<ImageHere>` exactly once. Solution: `tutorials/solutions/s03_alignment.py`.

# %%
from xraygpt_lab.exercises import check_xraygpt_labels
from xraygpt_lab.exercises.alignment import tiny_tokenizer
from xraygpt_lab.models.conversation import xraygpt_prompt

tok = tiny_tokenizer()  # the checker's byte-level BPE (knows <s>, <Img>, ###)
example = xraygpt_prompt("Describe the given chest x-ray image in detail.")
print(example, "->", len(tok(example, add_special_tokens=False)["input_ids"]), "tokens")


def xraygpt_labels(tokenizer, prompt, target, num_image_tokens, max_target_tokens=160):
    # YOUR CODE HERE
    raise NotImplementedError


check_xraygpt_labels(xraygpt_labels)

# %% [markdown]
# The feedback when the prompt is not masked (the model would learn to write the question):

# %%
def unmasked(tokenizer, prompt, target, num_image_tokens, max_target_tokens=160):
    before, after = prompt.split("<ImageHere>")
    ids = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"] if t else []  # noqa: E731
    return ([tokenizer.bos_token_id] + ids(before) + [-100] * num_image_tokens + ids(after)
            + ids(target + "###")[:max_target_tokens])


check_xraygpt_labels(unmasked)
