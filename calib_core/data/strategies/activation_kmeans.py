"""activation-kmeans: COLA's selection stage (stage 3 of its three; stages 1-2, choosing domain-matched
datasets and reformatting them, are not ours). Each decoder layer's output mean-pooled over the window's real
tokens, L2-normalised, the layers concatenated, a seeded Gaussian projection to kmeans_dim dimensions, k-means
(k = nsamples, k-means++ seeding), and for each centroid in turn the nearest candidate not already taken."""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import POOL_FACTOR, SCORE_BATCH, Selection, SelectionContext, Setting, Strategy
from .forwards import layer_features


def random_projection(features: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """features @ R with R a seeded standard Gaussian [features, dim] matrix scaled by 1/sqrt(dim)."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    return features.double() @ matrix


def nearest_distinct(points: np.ndarray, centroids: np.ndarray) -> tuple[list[int], list[float]]:
    """For each centroid in order, the nearest point not taken by an earlier centroid, and its distance."""
    distances = np.linalg.norm(points[:, None, :] - centroids[None, :, :], axis=-1)
    taken: set[int] = set()
    chosen, gaps = [], []
    for c in range(centroids.shape[0]):
        for p in np.argsort(distances[:, c], kind="stable"):
            if int(p) not in taken:
                taken.add(int(p))
                chosen.append(int(p))
                gaps.append(float(distances[p, c]))
                break
    return chosen, gaps


def _activation_kmeans(ctx: SelectionContext) -> Selection:
    from scipy.cluster.vq import kmeans2

    features = layer_features(ctx.model, ctx.pool_ids, ctx.pool_lengths, ctx.options["score_batch_size"])
    projected = random_projection(features, ctx.options["kmeans_dim"], ctx.seed).numpy()
    centroids, labels = kmeans2(projected, ctx.nsamples, iter=ctx.options["kmeans_iterations"], minit="++",
                                seed=np.random.default_rng(ctx.seed), missing="warn")
    chosen, gaps = nearest_distinct(projected, centroids)
    return Selection(ctx.pool_ids[chosen], [ctx.pool_lengths[i] for i in chosen], chosen, gaps,
                     "distance of the candidate to its centroid in the projection (the nearest is chosen)",
                     details={"features": int(features.shape[1]), "cluster_sizes": np.bincount(
                         labels, minlength=ctx.nsamples).tolist()})


STRATEGY = Strategy("activation-kmeans", "COLA's selection stage: pool windows spread over the activation space",
                    "COLA's selection stage (stage 3 of 3; its domain choice and reformatting stages are not included): every pool window is described by the mean activation of each layer, projected to a "
                    "few dimensions and clustered with k-means into nsamples clusters; the window nearest each centre is "
                    "kept, so the set covers diverse behaviour of the model.",
                    True, True, (POOL_FACTOR, SCORE_BATCH,
                                 Setting("kmeans_dim", 64, "random-projection dimensions (COLA: 64)", low=1, high=4096),
                                 Setting("kmeans_iterations", 50, "k-means iterations", low=1, high=10_000)),
                    _activation_kmeans)
