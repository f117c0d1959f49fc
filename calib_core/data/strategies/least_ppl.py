"""least-ppl: the pool candidates with the lowest mean token cross-entropy under the dense model (ties: the
earlier candidate); the baseline of ZipCal and COLA."""

from __future__ import annotations

from .base import POOL_FACTOR, SCORE_BATCH, Selection, SelectionContext, Strategy
from .forwards import window_cross_entropy


def _least_ppl(ctx: SelectionContext) -> Selection:
    losses = window_cross_entropy(ctx.model, ctx.pool_ids, ctx.pool_lengths, ctx.options["score_batch_size"])
    chosen = sorted(range(len(losses)), key=lambda i: (losses[i], i))[: ctx.nsamples]
    return Selection(ctx.pool_ids[chosen], [ctx.pool_lengths[i] for i in chosen], chosen,
                     [losses[i] for i in chosen], "mean token cross-entropy under the dense model (nats; lower "
                     "is chosen)", pool_scores=losses)


STRATEGY = Strategy("least-ppl", "the pool windows the dense model finds most predictable",
                    "Draws a pool of candidate windows (pool factor x nsamples), scores each by its perplexity under the "
                    "dense model and keeps the nsamples lowest: the baseline of ZipCal and COLA.",
                    True, True, (POOL_FACTOR, SCORE_BATCH), _least_ppl)
