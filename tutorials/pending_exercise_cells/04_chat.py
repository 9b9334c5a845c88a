# %% [markdown]
# ## Exercises: a safe transcript and a bounded context (checked automatically)
#
# Solutions: `tutorials/solutions/s04_chat.py`; library: `widgets.html.escape_text`,
# `models.conversation.Conversation.drop_oldest_turn` and `widgets.session.ChatSession.plan`.
#
# **Exercise 1 — escape a message.** The transcript is HTML. A user may type
# `<img src=x onerror=alert(1)>` and the model may echo it. Write `escape_message(text)`:
# turn `\r\n` into `\n`, drop control characters (`\x00-\x08`, `\x0b-\x1f`, `\x7f-\x9f`), escape
# `& < > " '` (the `&` first!), then turn each `\n` into `<br>`.

# %%
import html

from xraygpt_lab.exercises import check_escape_message, check_fit_history
from xraygpt_lab.exercises.chat import count_words


def escape_message(text):
    # YOUR CODE HERE
    raise NotImplementedError


check_escape_message(escape_message)

# %% [markdown]
# What `html.escape(text, quote=False)` gets from the checker:

# %%
check_escape_message(lambda text: html.escape(text, quote=False).replace("\n", "<br>"))

# %% [markdown]
# **Exercise 2 — fit the history in the context.** Vicuna-7B reads at most 2048 tokens. Write
# `fit_history(messages, count_tokens, context, max_new_tokens)`: `messages` are
# `[role, text]` pairs (`Conversation.messages`), the last one the open `["Doctor", None]`.
# While `count_tokens(Conversation(messages=…).get_prompt()) + max_new_tokens > context`, delete
# the oldest question/answer pair, but never the image: if the deleted question carried
# `<Img><ImageHere></Img>`, put it in front of the oldest remaining question. Stop when only the
# open question is left. Return `(messages, number_of_pairs_dropped)`.

# %%
from xraygpt_lab.models.conversation import IMAGE_SLOT, Conversation  # noqa: F401 (for your answer)


def fit_history(messages, count_tokens, context, max_new_tokens):
    # YOUR CODE HERE
    raise NotImplementedError


check_fit_history(fit_history)
