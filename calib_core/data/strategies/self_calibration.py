"""self-calibration (Williams, Chrysostomou and Aletras, NAACL 2025): the model writes its own calibration text,
its windows made from its start token alone; the run's source is not read.

As the paper describes it (section 3):
- generation is conditioned on the start-of-sequence token alone (no prompt, no corpus);
- each generation runs until the end-of-sequence token or the window's length; a window that one generation
  does not fill is filled by concatenating further generations, each from the start token again;
- the temperature scales linearly from t_initial at the first generated token to t_final over the first n
  generation steps, then holds t_final: t_i = t_initial + (i / n)(t_final - t_initial) for i <= n. The paper's
  headline runs use t = 1.0 throughout (plain sampling); its ablation uses n = 10;
- for multilingual models (Gemma, Mistral, Llama in the paper) only the first generation step is restricted to
  English stop words, spaCy's list (Honnibal et al., 2020).

Our choices where the paper is silent: a multilingual model is one whose vocabulary has at least
MULTILINGUAL_VOCABULARY tokens (Gemma 3's 262k; SmolLM2's 49k is not), a stop word is allowed as a first token
when it (lower-case or capitalised) is one token of the vocabulary, and the rest of a generation that overflows
its window is dropped (the next window starts from the start token). `cosine` and `constant` schedules are our
variants, named in the record.
"""

from __future__ import annotations

import math

import torch

from ...errors import ConfigError, SourceError
from .base import SELF_CALIBRATION, Selection, SelectionContext, Setting, Strategy

TEMPERATURE_SHAPES = {
    "linear": "straight from the start to the end value over the ramp, then the end value (the paper's)",
    "cosine": "half a cosine over the ramp (slow at both ends), then the end value (our variant)",
    "constant": "the start value throughout (plain sampling at that temperature)",
}
FIRST_TOKEN_RULES = {
    "auto": "English stop words for a multilingual vocabulary (the paper's rule for Gemma, Mistral and Llama), "
            "any token otherwise",
    "any": "any token of the vocabulary",
    "english-stop-word": "one of spaCy's English stop words (one token, lower-case or capitalised)",
}
MULTILINGUAL_VOCABULARY = 100_000


def temperature_schedule(length: int, start: float, end: float, shape: str, ramp_steps: int) -> list[float]:
    """The temperature of each of `length` sampled tokens: from `start` at the first to `end` after
    `ramp_steps` steps, held from there (see TEMPERATURE_SHAPES)."""
    if ramp_steps < 1:
        raise ConfigError(f"The temperature ramp needs at least 1 step, got {ramp_steps}.")
    out = []
    for i in range(length):
        fraction = min(i, ramp_steps) / ramp_steps
        if shape == "linear":
            out.append(start + (end - start) * fraction)
        elif shape == "cosine":
            out.append(end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2)
        else:
            out.append(start)
    return out


class ScheduledTemperature:
    """A logits processor dividing the logits of the i-th sampled token of a generation by schedule[i]."""

    def __init__(self, schedule: list[float], prompt_length: int):
        self.schedule, self.prompt_length = schedule, prompt_length
        self.applied: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        temperature = self.schedule[min(input_ids.shape[1] - self.prompt_length, len(self.schedule) - 1)]
        self.applied.append(temperature)
        return scores / temperature


class FirstTokenOnly:
    """A logits processor allowing only `allowed` ids at the first generated token (later steps untouched)."""

    def __init__(self, allowed: list[int], prompt_length: int):
        self.allowed, self.prompt_length = torch.tensor(sorted(allowed)), prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] != self.prompt_length:
            return scores
        keep = torch.full_like(scores, float("-inf"))
        keep[:, self.allowed.to(scores.device)] = 0.0
        return scores + keep


def start_token(tokenizer) -> tuple[int, str]:
    """The id every generation starts from: BOS, else EOS (GPT-2-style tokenizers mark a document start
    with it), and which one it is."""
    for attr, label in (("bos_token_id", "BOS"), ("eos_token_id", "EOS (the tokenizer has no BOS)")):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value), label
    raise SourceError("Self-calibration starts from the BOS token, and this tokenizer has neither BOS nor EOS.")


def end_tokens(model, tokenizer) -> list[int]:
    """The ids that end a generated document: the tokenizer's EOS and the model's generation EOS ids."""
    found = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in [getattr(tokenizer, "eos_token_id", None),
                  *(configured if isinstance(configured, (list, tuple)) else [configured])]:
        if value is not None and int(value) not in found:
            found.append(int(value))
    return found


def english_stop_word_tokens(tokenizer) -> list[int]:
    """The ids of spaCy's English stop words that are one token of the vocabulary, lower-case or capitalised,
    as the tokenizer writes them at the start of a text."""
    from spacy.lang.en.stop_words import STOP_WORDS

    allowed = set()
    for word in STOP_WORDS:
        for form in {word, word.capitalize()}:
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                allowed.add(int(ids[0]))
    return sorted(allowed)


def first_token_rule(rule: str, tokenizer) -> str:
    """'any' or 'english-stop-word': what `rule` means for this tokenizer."""
    if rule == "auto":
        return "english-stop-word" if len(tokenizer) >= MULTILINGUAL_VOCABULARY else "any"
    return rule


def _pad_id(tokenizer, fallback: int) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return fallback if pad is None else int(pad)


def generate_windows(model, tokenizer, nsamples: int, seqlen: int, seed: int, options: dict) -> tuple[torch.Tensor, dict]:
    """[nsamples, seqlen] ids of generated documents, each window filled by concatenating generations, and
    what ran (the record's details)."""
    from transformers import GenerationConfig, LogitsProcessorList

    token, which = start_token(tokenizer)
    ends = end_tokens(model, tokenizer)
    new_tokens = seqlen - 1
    schedule = temperature_schedule(new_tokens, options["temperature_start"], options["temperature_end"],
                                    options["temperature_shape"], options["ramp_steps"])
    rule = first_token_rule(options["first_token"], tokenizer)
    allowed = english_stop_word_tokens(tokenizer) if rule == "english-stop-word" else None
    if allowed is not None and not allowed:
        raise SourceError("No English stop word is one token of this vocabulary: use first_token 'any'.")
    device = next(model.parameters()).device
    # Plain sampling with our temperatures only: the model's own generation defaults (top-k, top-p, repetition
    # penalty) are not applied; a generation ends at EOS (padded after it).
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                              eos_token_id=ends or None, pad_token_id=_pad_id(tokenizer, token))
    torch.manual_seed(seed)
    windows: list[list[int]] = [[]]
    documents, ended, lengths = 0, 0, []
    # Every document adds at least two tokens (its start token and one more), so this many always fill the windows.
    for _ in range(nsamples * seqlen // 2 + 1):
        # No more generations at once than windows are left to fill: each fills at most one.
        count = min(options["generation_batch_size"], nsamples - len(windows) + 1)
        prompt = torch.full((count, 1), token, dtype=torch.long, device=device)
        processors = [ScheduledTemperature(schedule, 1)] + ([FirstTokenOnly(allowed, 1)] if allowed else [])
        with torch.inference_mode():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config,
                                 logits_processor=LogitsProcessorList(processors)).cpu()
        for row in out.tolist():
            generated = row[1:]
            stop = next((i for i, t in enumerate(generated) if t in ends), None)
            document = [token] + (generated if stop is None else generated[: stop + 1])
            documents += 1
            ended += stop is not None
            lengths.append(len(document))
            room = seqlen - len(windows[-1])
            windows[-1] += document[:room]
            if len(windows[-1]) == seqlen:
                if len(windows) == nsamples:
                    ids = torch.tensor(windows, dtype=torch.long)
                    return ids, {
                        "start_token": which, "start_token_id": token, "end_token_ids": ends,
                        "first_token": rule, "first_token_choices": None if allowed is None else len(allowed),
                        "ramp_steps": options["ramp_steps"],
                        "temperatures": {"first": schedule[0], "after_ramp": schedule[-1]},
                        "documents": documents, "documents_ended_at_eos": ended,
                        "mean_document_tokens": sum(lengths) / len(lengths)}
                windows.append([])
    raise SourceError("Self-calibration could not fill its windows.")  # unreachable: see the loop's bound


def _self_calibration(ctx: SelectionContext) -> Selection:
    ids, details = generate_windows(ctx.model, ctx.tokenizer, ctx.nsamples, ctx.seqlen, ctx.seed, ctx.options)
    return Selection(ids, [ctx.seqlen] * ctx.nsamples, details=details)


STRATEGY = Strategy(SELF_CALIBRATION, "the model writes its own windows from BOS (no corpus)",
                    "The model writes every window itself, starting from its start token alone and sampling until its "
                    "end token; further generations fill the rest of the window (Williams et al., NAACL 2025). The "
                    "temperature moves from a start to an end value over the first steps of each generation, then holds; "
                    "the paper's headline runs sample at 1.0 throughout. For a multilingual vocabulary the first token is "
                    "an English stop word, as in the paper. No corpus is read.",
                    True, False, (Setting("temperature_start", 1.0, "temperature of the first sampled token of a "
                                          "generation (the paper's headline runs: 1.0)", low=0.01, high=10.0),
                                  Setting("temperature_end", 1.0, "temperature after the ramp (the paper's headline "
                                          "runs: 1.0)", low=0.01, high=10.0),
                                  Setting("ramp_steps", 10, "generation steps over which the temperature moves from the "
                                          "start to the end value, held after (the paper's ablation: 10)", low=1, high=10**6),
                                  Setting("temperature_shape", "linear", "; ".join(f"{k}: {v}" for k, v in
                                                                                 TEMPERATURE_SHAPES.items()),
                                          choices=tuple(TEMPERATURE_SHAPES)),
                                  Setting("first_token", "auto", "; ".join(f"{k}: {v}" for k, v in FIRST_TOKEN_RULES.items()),
                                          choices=tuple(FIRST_TOKEN_RULES)),
                                  Setting("generation_batch_size", 16, "generations sampled together", low=1, high=1024)),
                    _self_calibration, revision=1)
