"""Reward functions that the preference tests name as --reward FILE:FUNCTION."""


def word_reward(prompts, completions, word):
    """1 for a completion that says the word the prompt asks for (the prompt file's "word")."""
    return [float(w in c.split()) for c, w in zip(completions, word)]


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def broken_reward(prompts, completions, **kwargs):
    raise RuntimeError("no score today")


def text_reward(prompts, completions, **kwargs):
    return ["high"] * len(completions)
