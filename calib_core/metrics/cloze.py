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


LOGITS_BUDGET = 2**26  # logit elements one scoring batch may hold (256 MB in float32): the vocabulary sets the batch


@torch.inference_mode()
def continuation_logliks(model, contexts: list[list[int]], candidates: list[list[list[int]]]) -> list[list[float]]:
    """Per item, the sum of log p(candidate tokens | its context) for each of its candidates. Contexts
    share one length and candidates another (cloze items do), so items run in batches with no padding:
    each context once, its key/value cache repeated for its candidates. The same log-likelihoods as
    scoring each context + candidate whole (tested), at a fraction of the forwards."""
    if not contexts:
        return []
    device = next(model.parameters()).device
    per_item, length = len(candidates[0]), len(candidates[0][0])
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = max(1, LOGITS_BUDGET // (vocab * per_item * length))
    out = []
    for at in range(0, len(contexts), batch):
        ctx = torch.tensor(contexts[at : at + batch], device=device)
        ids = torch.tensor([c for item in candidates[at : at + batch] for c in item], device=device)
        prompt = model(input_ids=ctx, use_cache=True, logits_to_keep=1)
        cache = prompt.past_key_values
        cache.batch_repeat_interleave(per_item)
        mask = torch.ones((ids.shape[0], ctx.shape[1] + length), dtype=torch.long, device=device)
        logits = model(input_ids=ids, past_key_values=cache, attention_mask=mask, use_cache=True).logits.float()
        first = F.log_softmax(prompt.logits[:, -1].float(), dim=-1).repeat_interleave(per_item, dim=0)
        first = first.gather(-1, ids[:, :1]).squeeze(-1)
        rest = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1).sum(dim=1)
        out += (first + rest).view(-1, per_item).tolist()
    return out


def cloze_accuracy(model, tokenizer, spec: str = "builtin:wiki", items: int = 100, context_tokens: int = 64,
                   continuation_tokens: int = 16, seed: int = 0) -> ClozeResult:
    questions = cloze_items(spec, tokenizer, items, context_tokens, continuation_tokens, seed)
    right = right_norm = 0
    logliks = continuation_logliks(model, [q.context for q in questions], [q.candidates for q in questions])
    for q, loglik in zip(questions, logliks):
        chars = [max(len(tokenizer.decode(c)), 1) for c in q.candidates]
        right += max(range(4), key=lambda i: loglik[i]) == q.answer
        right_norm += max(range(4), key=lambda i: loglik[i] / chars[i]) == q.answer
    return ClozeResult(spec, len(questions), right / len(questions), right_norm / len(questions), context_tokens,
                       continuation_tokens, seed)
