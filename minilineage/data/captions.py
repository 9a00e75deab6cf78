"""Captions made from class labels, for the text-conditioned chapters.

A label becomes text through a template: "a handwritten {word}" with the class name, or "the digit
{digit}" with its number. Text-to-image models train on these captions and are prompted with them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "a photo of the number {word}",
    "a drawing of a {word}",
    "the number {digit} written by hand",
)
PHOTO_TEMPLATES = ("a photo of {article} {word}", "{article} {word}", "a small photo of {article} {word}")


def split_words(text: str) -> list[str]:
    """Lower-case words and numbers of a text; everything else separates them."""
    return re.findall(r"[a-z0-9]+", text.lower())


def fill_template(template: str, classes: Sequence[str], label: int) -> str:
    """One caption: the template with the class name as {word}, the label as {digit}, and a/an as {article}."""
    word = classes[label]
    article = "an" if word[0] in "aeiou" else "a"
    return template.format(word=word, digit=label, article=article)


def all_captions(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every caption the templates can make for these classes."""
    return [fill_template(t, classes, label) for label in range(len(classes)) for t in templates]


def digit_prompts(n: int) -> list[str]:
    """"a handwritten zero", "a handwritten one", ... cycling over the ten digits, n prompts."""
    return [f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(n)]


def prompt_digit(prompt: str) -> int | None:
    """The one digit a prompt names ("a handwritten seven", "the digit 7" -> 7), else None.

    `minilineage sample --prompt` stores it as the samples' label, so `minilineage eval` can report
    prompt adherence; prompts naming no digit, or two different ones, get no label.
    """
    names = {word: i for i, word in enumerate(DIGIT_WORDS)} | {str(i): i for i in range(10)}
    found = {names[w] for w in split_words(prompt) if w in names}
    return found.pop() if len(found) == 1 else None
