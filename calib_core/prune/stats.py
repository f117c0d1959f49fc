"""Per-Linear input statistics, accumulated in fp32 over calibration tokens."""

from __future__ import annotations

import torch

CHANNEL_KINDS = {
    "norm": "||X_j||: sqrt(sum over tokens of x_j^2 / nsamples), the activation norm Wanda's score multiplies "
            "(also OWL's outlier scores, RIA's ||X_j||^a and DSnoT's Wanda base)",
    "hessian_diag": "diag(H) = (2 / nsamples) sum x_j^2, SparseGPT's Hessian diagonal before dampening",
    "mean": "DSnoT's per-channel mean (token sums averaged over samples)",
    "variance": "DSnoT's per-channel variance (within-sequence, token-weighted)",
}


class InputStats:
    """Running statistics of a Linear's input X [tokens, in].

    Always: the per-feature sum of squares (Wanda's ||X_j||^2). Optionally the per-feature sum and
    the within-sequence variance (DSnoT) and the Gram matrix X^T X (SparseGPT's Hessian).
    """

    def __init__(self, in_features: int, device, with_mean: bool = False, with_hessian: bool = False):
        self.sum_sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.sum = torch.zeros(in_features, dtype=torch.float32, device=device) if with_mean else None
        # sum over sequences of (tokens in the sequence x its per-feature variance)
        self.within_var_sum = torch.zeros(in_features, dtype=torch.float32, device=device) if with_mean else None
        self.gram = (
            torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if with_hessian else None
        )
        self.tokens = 0
        self.samples = 0
        self._hand_over_gram = False

    def add(self, x: torch.Tensor, samples: int) -> None:
        """`x` is [samples, tokens, in] or the [tokens, in] of one sample."""
        sequences = x.float() if x.dim() == 3 else x.float().unsqueeze(0)
        x = sequences.reshape(-1, x.shape[-1])
        self.sum_sq += x.square().sum(0)
        if self.sum is not None:
            self.sum += x.sum(0)
            per_sequence = torch.var(sequences, dim=1, unbiased=False) * sequences.shape[1]
            self.within_var_sum += per_sequence.sum(0)
        if self.gram is not None:
            self.gram.addmm_(x.t(), x)
        self.tokens += x.shape[0]
        self.samples += samples

    def feature_norm(self) -> torch.Tensor:
        """Wanda's s_j = sqrt(mean over samples of sum over tokens x_j^2)."""
        return (self.sum_sq / max(self.samples, 1)).sqrt()

    def channel_summary(self) -> dict[str, torch.Tensor]:
        """One value per input channel of what the methods' scores use (CHANNEL_KINDS), computed from these
        statistics before a method consumes them (SparseGPT factorizes the Gram matrix in place)."""
        summary = {"norm": self.feature_norm()}
        if self.gram is not None:
            summary["hessian_diag"] = torch.diagonal(self.gram) * (2.0 / max(self.samples, 1))
        if self.sum is not None:
            summary["mean"] = self.token_sum_mean()
            summary["variance"] = self.variance()
        return {kind: values.detach().float().cpu() for kind, values in summary.items()}

    def hessian(self) -> torch.Tensor:
        """SparseGPT's H = (2 / n) sum X^T X, n = number of calibration samples: a new tensor the caller
        owns. After `last_use()`, the accumulated Gram matrix itself, scaled in place, which these
        statistics then no longer hold (one [in, in] matrix less in memory)."""
        if self.gram is None:
            raise RuntimeError("Hessian requested from statistics collected without it (or already handed over).")
        scale = 2.0 / max(self.samples, 1)
        if self._hand_over_gram:
            gram, self.gram = self.gram, None
            return gram.mul_(scale)
        return self.gram * scale

    def last_use(self) -> None:
        """The next `hessian()` is the last one: it may hand over the Gram matrix instead of a copy."""
        self._hand_over_gram = True

    def token_sum_mean(self) -> torch.Tensor:
        """DSnoT's mean: per-feature token sums averaged over samples."""
        if self.sum is None:
            raise RuntimeError("Mean requested from statistics collected without it.")
        return self.sum / max(self.samples, 1)

    def variance(self) -> torch.Tensor:
        """DSnoT's variance: each sequence's per-feature variance over its tokens, averaged with
        token weights (as the authors accumulate it; excludes the spread between sequence means)."""
        if self.within_var_sum is None:
            raise RuntimeError("Variance requested from statistics collected without it.")
        return self.within_var_sum / max(self.tokens, 1)
