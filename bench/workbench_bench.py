"""Workbench benchmark on the bundled model (issue #3), offline.

1. Mean Min-K%++ (K=0.5), Min-K% and ppl per set: builtin:wiki, news, books, code and a set the
   model wrote itself from builtin:wiki prefixes (64 texts).
2. Wanda at 50% and 60% (32 x 512 calibration tokens, concatenate mode for every source so short
   self-generated texts are usable) evaluated on builtin:wiki and builtin:news held-out parts.
3. Throughput: batched generation (batch 8) vs batch-1 `generate`; Min-K%++ scoring vs a plain
   forward over the same windows.

    .venv/bin/python bench/workbench_bench.py        # about 35 min on 2 CPUs
"""

from __future__ import annotations

import json
import time

import torch
from _common import ROOT, write_results  # first: it puts the repository on sys.path

from calib_core.data import sets
from calib_core.data.selfgen import GenerationConfig, generate_set, save_generated
from calib_core.data.sources import BUILTIN_SOURCES, build_calibration
from calib_core.metrics.perplexity import perplexity
from calib_core.metrics.similarity import sample_texts, score_token_ids, similarity_table
from calib_core.models import load_model
from calib_core.prune import PruneConfig, prune_model

OUT = ROOT / "bench" / "results" / "workbench_bench"
SOURCES = list(BUILTIN_SOURCES)
SELFGEN = GenerationConfig(source="builtin:wiki", texts=64, max_new_tokens=600, batch_size=8, seed=0)
SCORE = dict(samples=64, max_tokens=512, k=0.5)
CALIB = dict(nsamples=32, seqlen=512, seed=0, mode="concat")
EVAL = dict(seqlen=512, max_windows=32)


def generation_throughput(lm, prompts_from: str, new_tokens: int = 48) -> dict:
    docs = sample_texts(prompts_from, 8, seed=1)
    prompts = [lm.tokenizer(d, add_special_tokens=True)["input_ids"][:2] for d in docs]
    kwargs = dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=50, repetition_penalty=1.2,
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=lm.tokenizer.eos_token_id)
    with torch.inference_mode():
        t = time.perf_counter()
        for p in prompts:
            lm.model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), **kwargs)
        single = time.perf_counter() - t
        ids = torch.tensor(prompts)  # all prompts are 2 tokens: no padding needed
        t = time.perf_counter()
        lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        batched = time.perf_counter() - t
    tokens = 8 * new_tokens
    return {"batch1_tokens_per_s": tokens / single, "batch8_tokens_per_s": tokens / batched,
            "ratio": single / batched, "new_tokens_each": new_tokens}


def scoring_throughput(lm, texts: list[str]) -> dict:
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"][:512] for t in texts]
    ids = [i for i in ids if len(i) >= 2]
    tokens = sum(len(i) for i in ids)
    t = time.perf_counter()
    score_token_ids(lm.model, ids, window=512, batch_size=4, pad_id=lm.tokenizer.eos_token_id)
    scoring = time.perf_counter() - t
    order = sorted(ids, key=len)
    with torch.inference_mode():
        t = time.perf_counter()
        for b in range(0, len(order), 4):
            batch = order[b : b + 4]
            width = max(len(x) for x in batch)
            input_ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for r, x in enumerate(batch):
                input_ids[r, : len(x)] = torch.tensor(x)
                mask[r, : len(x)] = 1
            lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        forward = time.perf_counter() - t
    return {"scoring_tokens_per_s": tokens / scoring, "forward_tokens_per_s": tokens / forward,
            "ratio": forward / scoring, "tokens": tokens}


def main():
    torch.set_num_threads(2)
    results = {"selfgen": SELFGEN.__dict__, "score": SCORE, "calib": CALIB, "eval": EVAL}
    lm = load_model("smollm2-135m")
    dense = {k: v.clone() for k, v in lm.model.state_dict().items()}

    results["generation_throughput"] = generation_throughput(lm, "builtin:wiki")
    print(json.dumps(results["generation_throughput"]), flush=True)

    t = time.perf_counter()
    generated = generate_set(lm.model, lm.tokenizer, SELFGEN, model_name="smollm2-135m")
    save_generated("bench-selfgen-wiki", generated)
    results["selfgen_seconds"] = time.perf_counter() - t
    results["selfgen_threshold"] = generated.threshold
    results["selfgen_kept"] = len(generated.kept_texts)
    print(f"self-generated {len(generated.records)} texts in {results['selfgen_seconds']:.0f} s", flush=True)

    named = {s: sample_texts(s, SCORE["samples"], seed=0) for s in SOURCES}
    named["set:bench-selfgen-wiki"] = sets.set_texts("bench-selfgen-wiki")
    results["scoring_throughput"] = scoring_throughput(lm, named["builtin:wiki"])
    print(json.dumps(results["scoring_throughput"]), flush=True)
    table, _ = similarity_table(lm.model, lm.tokenizer, named, None, SCORE["k"], SCORE["max_tokens"], SCORE["max_tokens"])
    means = table.groupby("set", sort=False)[["min_k_pp", "min_k", "ppl", "tokens"]].agg(["mean", "std"])
    results["similarity"] = {s: {f"{m}_{a}": float(means.loc[s, (m, a)]) for m, a in means.columns} for s in means.index}
    print(means.to_string(), flush=True)

    rows = []
    for source in list(named):
        try:
            calib = build_calibration(source, lm.tokenizer, **CALIB)
        except Exception as exc:  # e.g. too few self-generated tokens: record it, keep the other points
            rows.append({"calibration": source, "error": str(exc)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        for sparsity in (0.5, 0.6):
            lm.model.load_state_dict(dense)
            prune_model(lm.model, calib.input_ids, PruneConfig(method="wanda", sparsity=sparsity))
            row = {"calibration": source, "sparsity": sparsity}
            for spec in ("builtin:wiki", "builtin:news"):
                row[f"ppl_{spec.split(':')[1]}"] = perplexity(lm.model, lm.tokenizer, spec, **EVAL).ppl
            rows.append(row)
            print(json.dumps(row), flush=True)
    results["wanda"] = rows

    lines = ["| set | mean Min-K%++ | std | mean Min-K% | mean ppl | tokens/text |", "|---|---|---|---|---|---|"]
    for s, v in results["similarity"].items():
        lines.append(f"| {s} | {v['min_k_pp_mean']:.3f} | {v['min_k_pp_std']:.3f} | {v['min_k_mean']:.3f} | "
                     f"{v['ppl_mean']:.1f} | {v['tokens_mean']:.0f} |")
    lines += ["", "| calibration | sparsity | ppl wiki held-out | ppl news held-out |", "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['calibration']} | - | {r['error']} | |")
            continue
        lines.append(f"| {r['calibration']} | {r['sparsity']} | {r['ppl_wiki']:.2f} | {r['ppl_news']:.2f} |")
    g, s = results["generation_throughput"], results["scoring_throughput"]
    lines += ["", f"Generation: batch 8 {g['batch8_tokens_per_s']:.1f} tok/s vs batch 1 {g['batch1_tokens_per_s']:.1f} "
              f"tok/s = {g['ratio']:.2f}x. Scoring: {s['scoring_tokens_per_s']:.0f} tok/s vs plain forward "
              f"{s['forward_tokens_per_s']:.0f} tok/s = {s['ratio']:.2f}."]
    write_results(OUT, results, lines)


if __name__ == "__main__":
    main()
