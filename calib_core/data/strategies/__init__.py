"""Calibration strategies: how the nsamples windows of a run are chosen, one module per strategy (registry.py
lists them; selection.py chooses a run's windows with one).

`random` is the seeded draw of data/sources.py (the default, and the baseline every other strategy is
compared with). The pool strategies first draw a candidate pool the same way (pool_factor x nsamples
windows of seqlen tokens from the run's source, with the run's mode and seed) and keep nsamples of them:

  least-ppl          the candidates with the lowest mean token cross-entropy under the dense model
                     (ties: the earlier candidate)
  unique-tokens      model-free greedy coverage (ZipCal): repeatedly the candidate adding the most normalised
                     token strings not yet seen (ties: the earlier candidate); each step looks at a seeded
                     random subsample of the remaining candidates when more than coverage_subsample remain
  activation-kmeans  COLA's selection stage (stage 3 of its three; stages 1-2, choosing domain-matched
                     datasets and reformatting them, are not ours): each decoder layer's output mean-pooled
                     over the window's real tokens, L2-normalised, the layers concatenated, a seeded Gaussian
                     projection to kmeans_dim dimensions, k-means (k = nsamples, k-means++ seeding), and for
                     each centroid in turn the nearest candidate not already taken

Two strategies make their windows instead of choosing them:

  self-calibration   the model writes its windows from its start token alone, each generation running to EOS
                     and further generations filling the window, with the paper's temperature schedule
                     (self_calibration.py; Williams et al., NAACL 2025); the run's source is not read
  icl-format         k-shot prompts of answered downstream-task items (icl_format.py: BBC News topics or
                     worked arithmetic, stand-ins for Bandari et al.'s datasets), cut into windows; the run's
                     source is not read

Every strategy that changed what it does since its first version has a `revision`, which sweep point keys name.

Mixes of sources are a source kind (`mix:`, data/mix.py): any strategy draws from one.

Every strategy's record (CalibrationSet.strategy, in the run record and a saved set) holds its name and
settings, the pool (source, size, seed, fingerprint), the chosen candidates' indices in the pool, the
score each was ranked by, and the seconds the selection took.
"""

from .activation_kmeans import nearest_distinct, random_projection
from .base import POOL_FACTOR, RANDOM, SCORE_BATCH, SELF_CALIBRATION, Selection, SelectionContext, Setting, Strategy
from .forwards import layer_features, window_cross_entropy
from .registry import STRATEGIES
from .selection import build_strategy_calibration, check_strategy, describe_strategy, non_default, selection_key
from .unique_tokens import greedy_coverage, normalised_tokens

__all__ = ["POOL_FACTOR", "RANDOM", "SCORE_BATCH", "SELF_CALIBRATION", "STRATEGIES", "Selection", "SelectionContext",
           "Setting", "Strategy", "build_strategy_calibration", "check_strategy", "describe_strategy", "greedy_coverage",
           "layer_features", "nearest_distinct", "non_default", "normalised_tokens", "random_projection",
           "selection_key", "window_cross_entropy"]
