"""Multi-source mixes (`mix:` sources): calibration windows drawn from several sources by weight,
optionally with rows of random token ids.

Spec: `mix:SOURCE=WEIGHT,SOURCE=WEIGHT[,random=FRACTION]`, e.g.
`mix:builtin:wiki=1,builtin:code=1` (a uniform mix, as IGSP's) or
`mix:builtin:wiki=50,builtin:code=20,random=0.15` (weighted, with 15% random-token rows "to exercise the
full vocabulary", as ExLlamaV3's default calibration). A weight may be left out (`mix:builtin:wiki,builtin:code`):
it is 1. Sources are split on commas, so a `file:` path in a mix must not contain one.

How nsamples are shared: round(FRACTION x nsamples) random rows first, the rest split by weight with the
largest-remainder rule (every source with a positive weight gets its exact share rounded, ties to the
earlier source). Each source is drawn as a source of its own (same mode and seed), so a mix of one source is
that source's draw. Rows are stacked in spec order, random rows last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SourceError

RANDOM_ROWS = "random"


@dataclass(frozen=True)
class Mix:
    sources: tuple[tuple[str, float], ...]  # (source spec, weight) in spec order
    random_fraction: float = 0.0

    def counts(self, nsamples: int) -> tuple[list[int], int]:
        """Windows per source (in order) and random-token rows, summing to nsamples."""
        random_rows = round(self.random_fraction * nsamples)
        rest = nsamples - random_rows
        total = sum(w for _, w in self.sources)
        shares = [rest * w / total for _, w in self.sources]
        counts = [math.floor(s) for s in shares]
        by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - counts[i]), i))
        for i in by_remainder[: rest - sum(counts)]:
            counts[i] += 1
        return counts, random_rows

    def describe(self) -> dict:
        return {"sources": [{"source": s, "weight": w} for s, w in self.sources],
                "random_fraction": self.random_fraction}


def parse_mix(rest: str) -> Mix:
    """The Mix of a `mix:` spec's part after 'mix:', or a SourceError saying what is wrong with it."""
    sources, random_fraction = [], 0.0
    for part in (p.strip() for p in rest.split(",")):
        if not part:
            raise SourceError(f"Mix 'mix:{rest}' has an empty entry; write mix:SOURCE=WEIGHT,SOURCE=WEIGHT.")
        name, sep, weight_text = part.rpartition("=")
        if not sep or ":" in weight_text:  # no weight given (or the '=' belonged to the source itself)
            name, weight_text = part, "1"
        try:
            weight = float(weight_text)
        except ValueError:
            raise SourceError(f"Mix weight '{weight_text}' of '{name}' is not a number.") from None
        if not math.isfinite(weight) or weight < 0:
            raise SourceError(f"Mix weight of '{name}' must be a finite number >= 0, got {weight_text}.")
        if name == RANDOM_ROWS:
            if not weight < 1:
                raise SourceError(f"random={weight_text}: the random-token fraction must be in [0, 1).")
            random_fraction = weight
            continue
        if name.startswith("mix:"):
            raise SourceError("A mix cannot contain another mix.")
        sources.append((name, weight))
    if not sources or sum(w for _, w in sources) <= 0:
        raise SourceError(f"Mix 'mix:{rest}' needs at least one source with a weight > 0.")
    return Mix(tuple(sources), random_fraction)


def random_token_rows(rows: int, seqlen: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Seeded uniform token ids over the whole vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (rows, seqlen), generator=generator, dtype=torch.long)
