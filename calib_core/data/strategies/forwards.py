"""Dense forwards over a pool of candidate windows: per-window cross-entropy (least-ppl) and mean-pooled
layer outputs (activation-kmeans)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _forward_batches(model, ids: torch.Tensor, lengths: list[int], batch_size: int, hidden: bool):
    """Per batch of pool windows: (row indices, outputs, mask of real tokens) from one dense forward.
    For hidden states only the decoder runs (no LM head: its logits would be the largest tensor)."""
    device = next(model.parameters()).device
    if hidden:
        model = getattr(model, "base_model", model)
    with torch.inference_mode():
        for start in range(0, ids.shape[0], batch_size):
            rows = list(range(start, min(start + batch_size, ids.shape[0])))
            batch = ids[rows].to(device)
            real = torch.zeros(batch.shape, dtype=torch.bool, device=device)
            for i, row in enumerate(rows):
                real[i, : lengths[row]] = True
            yield rows, model(input_ids=batch, use_cache=False, output_hidden_states=hidden), real


def window_cross_entropy(model, ids: torch.Tensor, lengths: list[int], batch_size: int = 8) -> list[float]:
    """Mean next-token cross-entropy (nats) over each window's real tokens: log of its perplexity."""
    out = [0.0] * ids.shape[0]
    for rows, result, real in _forward_batches(model, ids, lengths, batch_size, hidden=False):
        logits = result.logits[:, :-1].float()
        target = ids[rows, 1:].to(logits.device)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        weight = real[:, 1:].float()
        for i, row in enumerate(rows):
            out[row] = float((loss[i] * weight[i]).sum() / weight[i].sum().clamp_min(1))
    return out


def layer_features(model, ids: torch.Tensor, lengths: list[int], batch_size: int = 8) -> torch.Tensor:
    """[pool, layers x hidden]: each decoder layer's output mean-pooled over the window's real tokens and
    L2-normalised, the layers concatenated (COLA's sample representation)."""
    features = [None] * ids.shape[0]
    for rows, result, real in _forward_batches(model, ids, lengths, batch_size, hidden=True):
        weight = real.float().unsqueeze(-1)
        pooled = [(h.float() * weight).sum(1) / weight.sum(1).clamp_min(1) for h in result.hidden_states[1:]]
        joined = torch.cat([F.normalize(p, dim=-1) for p in pooled], dim=-1).cpu()
        for i, row in enumerate(rows):
            features[row] = joined[i]
    return torch.stack(features)
