"""The lab's story as presets: the seed paper's questions, each with the smallest experiment that shows its
answer on a CPU in minutes, as the settings of the form that runs it (the Sweeps, Similarity or
Calibration data page fills its form from them; nothing runs until the user starts it there)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.sources import BUILTIN_SOURCES


@dataclass(frozen=True)
class Preset:
    key: str
    question: str  # the paper's question, as the Start page asks it
    experiment: str  # what the preset sets up, in one sentence
    page: str  # the app page whose form it fills
    form: dict = field(default_factory=dict)  # that form's settings (a sweep: SweepGrid fields but the model)

    def grid(self, model: str, dtype: str, device: str = "auto"):
        """The sweep a sweep preset sets up, on `model` (for its points and time estimate)."""
        from .sweeps import SweepGrid

        return SweepGrid.from_dict({**self.form, "model": model, "dtype": dtype, "device": device})


SWEEPS, SIMILARITY, CALIBRATION = "app_pages/sweeps.py", "app_pages/similarity.py", "app_pages/calibration.py"
PRESETS = [
    Preset("source", "Does the calibration source matter, and more at higher sparsity?",
           "Wanda at 50% and 70% calibrated on wiki and on code (2 seeds each, 8 x 128 tokens), evaluated on both "
           "domains: 8 runs.", SWEEPS,
           dict(name="preset-wiki-vs-code", calibration=["builtin:wiki", "builtin:code"], methods=["wanda"],
                sparsities=[0.5, 0.7], nsamples=[8], seeds=[0, 1], seqlen=128, eval=["builtin:wiki", "builtin:code"],
                eval_windows=4, mode="document")),
    Preset("amount", "Does more calibration data help?",
           "Wanda at 60% on wiki with 2, 8 and 32 samples of 128 tokens (2 seeds each): 6 runs.", SWEEPS,
           dict(name="preset-more-data", calibration=["builtin:wiki"], methods=["wanda"], sparsities=[0.6],
                nsamples=[2, 8, 32], seeds=[0, 1], seqlen=128, eval=["builtin:wiki"], eval_windows=4,
                mode="document")),
    Preset("similarity", "Is text closer to the pretraining data better calibration?",
           "Min-K%++ of the four builtin corpora (16 windows of 128 tokens each); the Results page then sets each "
           "source's score against the perplexity its runs pruned to.", SIMILARITY,
           dict(sets=list(BUILTIN_SOURCES), items=16, tokens=128)),
    Preset("selfgen", "Does text the model writes itself calibrate as well as real text?",
           "The model continues 16 two-token prefixes of wiki for 128 new tokens each (Self-generate tab), saved as "
           "set:selfgen to prune with next to wiki.", CALIBRATION,
           dict(source="builtin:wiki", texts=16, new_tokens=128, name="selfgen")),
]
BY_KEY = {preset.key: preset for preset in PRESETS}
