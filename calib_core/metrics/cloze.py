"""Offline zero-shot accuracy: a multiple-choice cloze task built from held-out text.

Each item is a passage's first `context_tokens` tokens and 4 candidate continuations of
`continuation_tokens` tokens: the passage's true next tokens and 3 taken from other held-out
documents. The model picks the candidate with the highest log-likelihood given the context
(`acc`), or the highest log-likelihood per character of the candidate's text (`acc_norm`, the
lm-evaluation-harness convention). Chance is 1/4.

A teaching proxy for the paper's commonsense tasks, measurable with no network: it is NOT comparable
to published zero-shot numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..data.cloze_items import ClozeItem, cloze_items  # noqa: F401  (ClozeItem: part of this module's API)


@dataclass
class ClozeResult:
    source: str
    items: int
    acc: float
    acc_norm: float
    context_tokens: int
    continuation_tokens: int
    seed: int
    protocol: str = ("4-way cloze on held-out text: true continuation vs 3 from other documents, scored by "
                     "log-likelihood (acc) and log-likelihood per character (acc_norm); chance 0.25")

    def as_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def continuation_loglik(model, context: list[int], candidates: list[list[int]]) -> list[float]:
    """Sum of log p(candidate tokens | context) for each candidate (equal lengths). The context runs once
    and its key/value cache is shared by the candidates' batch: the same log-likelihoods as scoring each
    context + candidate whole (tested), at about half the tokens."""
    device = next(model.parameters()).device
    prompt = model(input_ids=torch.tensor([context], device=device), use_cache=True)
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(len(candidates))
    ids = torch.tensor(candidates, device=device)
    mask = torch.ones((len(candidates), len(context) + ids.shape[1]), dtype=torch.long, device=device)
    logits = model(input_ids=ids, past_key_values=cache, attention_mask=mask, use_cache=True).logits.float()
    first = F.log_softmax(prompt.logits[0, -1].float(), dim=-1)[ids[:, 0]]
    rest = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(dim=1)
    return (first + rest).tolist()


def cloze_accuracy(model, tokenizer, spec: str = "builtin:wiki", items: int = 100, context_tokens: int = 64,
                   continuation_tokens: int = 16, seed: int = 0) -> ClozeResult:
    questions = cloze_items(spec, tokenizer, items, context_tokens, continuation_tokens, seed)
    right = right_norm = 0
    for q in questions:
        loglik = continuation_loglik(model, q.context, q.candidates)
        chars = [max(len(tokenizer.decode(c)), 1) for c in q.candidates]
        right += max(range(4), key=lambda i: loglik[i]) == q.answer
        right_norm += max(range(4), key=lambda i: loglik[i] / chars[i]) == q.answer
    return ClozeResult(spec, len(questions), right / len(questions), right_norm / len(questions), context_tokens,
                       continuation_tokens, seed)
