"""SparseGPT (Frantar & Alistarh 2023): mask selection with OBS weight updates, column block by
column block, from the inverse Hessian's upper Cholesky factor."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .masks import Pattern
from .options import option


@dataclass(frozen=True)
class SparseGPTOptions:
    """SparseGPT's options (PruneConfig fields; the defaults are the authors')."""

    sparsegpt_blocksize: int = option(128, "SparseGPT column block size", low=1, high=4096,
                                      label="SparseGPT blocksize")
    sparsegpt_damp: float = option(0.01, "SparseGPT dampening (fraction of mean diag H)", low=0, high=1,
                                   label="SparseGPT damping")


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    pattern: Pattern,
    blocksize: int = 128,
    damp: float = 0.01,
    overwrite_hessian: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (updated weight [out, in] in fp32, mask with True = pruned). `overwrite_hessian`: factorize
    `hessian` (fp32) in place instead of a copy, for a caller that no longer needs it."""
    W, Hinv = _prepared(weight, hessian, damp, overwrite_hessian)
    rows, cols = W.shape

    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)
        if pattern.is_nm:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            scores = W1.square() / d1.square().unsqueeze(0)
            k = int(scores.numel() * sparsity)
            mask1 = torch.zeros(scores.numel(), dtype=torch.bool, device=W.device)
            if k:
                mask1[torch.topk(scores.flatten(), k, largest=False).indices] = True
            mask1 = mask1.view_as(W1)
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0 and pattern.n:
                group = W1[:, i : i + pattern.m].square() / d1[i : i + pattern.m].square().unsqueeze(0)
                idx = torch.topk(group, pattern.n, dim=1, largest=False).indices
                mask1.scatter_(1, i + idx, True)
            # err = (w - q) / d with q = w masked; the update turns column i itself into q, so
            # W1 ends up holding the pruned-and-compensated block (exact zeros are set below).
            err = W1[:, i] * mask1[:, i] / Hinv1[i, i]
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1.0)
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1.0)
        mask[:, i1:i2] = mask1
    W[mask] = 0.0
    return W, mask


def sparsegpt_static_scores(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01,
                            overwrite_hessian: bool = False) -> torch.Tensor:
    """SparseGPT's saliency W^2 / diag(Hinv)^2 on the unchanged weights, without the column-by-column
    updates: the DSnoT authors' initial metric for their SparseGPT base."""
    W, Hinv = _prepared(weight, hessian, damp, overwrite_hessian)
    return W.square() / torch.diag(Hinv).square().unsqueeze(0)


def _prepared(weight: torch.Tensor, hessian: torch.Tensor, damp: float,
              overwrite_hessian: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32: dead inputs (H_jj = 0) get H_jj = 1 and W[:, j] = 0; damped H; Hinv's upper factor. The
    factor is made before the weight copy, so that at most two [in, in] matrices and no weight copy
    are alive at once."""
    H = hessian.detach()
    if not (overwrite_hessian and H.dtype == torch.float32):
        H = H.to(torch.float32, copy=True)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    Hinv = _upper_cholesky_of_inverse(H)
    W = weight.detach().to(torch.float32, copy=True)
    W[:, dead] = 0.0
    return W, Hinv


def _upper_cholesky_of_inverse(H: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of H's inverse. H (ours to overwrite) holds the first two steps in
    place and its memory is released at the end, whoever else refers to it. The factor is a new
    tensor, as LAPACK lays it out (column-major): the column updates' rounding depends on that."""
    torch.linalg.cholesky(H, out=H)
    torch.cholesky_inverse(H, out=H)
    factor = torch.linalg.cholesky(H, upper=True)
    H.untyped_storage().resize_(0)
    return factor
