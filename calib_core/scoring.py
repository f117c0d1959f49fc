"""Scoring token sequences with a causal LM: per-token log-probabilities and the statistics of the
predicted distribution, in padded batches. Similarity measures (Min-K%++) and self-generation's
perplexity filter both read these scores."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import SourceError


@dataclass
class TokenScores:
    """Per predicted position t >= 2 of one text: log p(x_t), and mu_t, sigma_t of log p."""

    logp: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    embedding: torch.Tensor  # mean of last-layer hidden states over the text's tokens

    @property
    def z(self) -> torch.Tensor:
        return (self.logp - self.mu) / self.sigma.clamp_min(1e-12)


def min_k(values: torch.Tensor, k: float) -> float:
    """Mean of the floor(k * n) smallest values (at least one)."""
    count = max(1, int(math.floor(k * values.numel())))
    return float(torch.topk(values.double(), count, largest=False).values.mean())


def score_token_ids(model, sequences: list[list[int]], window: int = 512, batch_size: int = 4,
                    pad_id: int = 0) -> list[TokenScores]:
    """Score token sequences in batches of right-padded windows (causal attention makes the padding
    invisible to real tokens). A text longer than `window` is split into consecutive windows."""
    pieces = []  # (text index, window ids)
    for index, ids in enumerate(sequences):
        if len(ids) < 2:
            raise SourceError(f"Text {index} has {len(ids)} token(s); scoring needs at least 2.")
        for start in range(0, len(ids), window):
            chunk = ids[start : start + window]
            if len(chunk) >= 2:
                pieces.append((index, chunk))
    # Similar lengths together: less padding, and results do not depend on the batch.
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][1]))
    parts: dict[int, list[tuple]] = {}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = [pieces[i] for i in order[b : b + batch_size]]
            width = max(len(ids) for _, ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                        use_cache=False, output_hidden_states=True)
            hidden = out.hidden_states[-1].float()
            for row, (index, ids) in enumerate(batch):
                n = len(ids)
                logprobs = F.log_softmax(out.logits[row, : n - 1].float(), dim=-1)
                probs = logprobs.exp()
                mu = (probs * logprobs).sum(-1)
                sigma = ((probs * logprobs.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
                target = torch.tensor(ids[1:], device=logprobs.device)
                logp = logprobs.gather(1, target[:, None]).squeeze(1)
                parts.setdefault(index, []).append(
                    (order[b + row], logp.cpu(), mu.cpu(), sigma.cpu(), hidden[row, :n].sum(0).cpu(), n)
                )
    results = []
    for index in range(len(sequences)):
        chunks = sorted(parts[index])  # back in window order
        tokens = sum(c[5] for c in chunks)
        results.append(TokenScores(
            torch.cat([c[1] for c in chunks]), torch.cat([c[2] for c in chunks]),
            torch.cat([c[3] for c in chunks]), sum(c[4] for c in chunks) / tokens,
        ))
    return results


def perplexity_of(scores: TokenScores) -> float:
    return float(torch.exp(-scores.logp.double().mean()))


def pad_id(tokenizer) -> int:
    """The id to right-pad batches with: the pad token, else EOS, else 0 (masked out either way)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
