"""Calibration strategies (data/strategies/) and mixes (data/mix.py), each checked against an
independent reference written from its description, plus the CLI, sweeps and bad input."""

import dataclasses
import json
import shlex

import numpy as np
import pandas as pd
import pytest
import torch

from calib_core.cli import build_parser, run_spec
from calib_core.cli import main as cli_main
from calib_core.data import sets
from calib_core.data.documents import parse_source
from calib_core.data.mix import parse_mix
from calib_core.data.sources import build_calibration
from calib_core.data.strategies import (
    STRATEGIES,
    build_strategy_calibration,
    check_strategy,
    greedy_coverage,
    layer_features,
    nearest_distinct,
    normalised_tokens,
    window_cross_entropy,
)
from calib_core.data.strategies.self_calibration import ScheduledTemperature, temperature_schedule
from calib_core.errors import ConfigError, SourceError
from calib_core.experiments.sweeps import SweepGrid, run_sweep
from calib_core.runs import RunStore
from calib_core.runs.pipeline import run_prune
from calib_core.runs.spec import RunSpec, reproduce_command
from tests.tiny import CharTokenizer, char_tokenizer, random_ids, save_tiny_folder, tiny_model

TOK = CharTokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_least_ppl_keeps_the_lowest_perplexity_windows_of_the_pool(model):
    calibration = build_strategy_calibration("builtin:wiki", TOK, 4, 24, seed=1, mode="concat", strategy="least-ppl",
                                             options={"pool_factor": 5, "score_batch_size": 3}, model=model)
    pool = build_calibration("builtin:wiki", TOK, 20, 24, seed=1, mode="concat")
    with torch.inference_mode():  # the reference: the model's own loss, one window at a time
        losses = [float(model(input_ids=row[None], labels=row[None]).loss) for row in pool.input_ids]
    brute_force = sorted(range(20), key=lambda i: losses[i])[:4]
    record = calibration.strategy
    assert record["chosen"] == brute_force
    assert torch.equal(calibration.input_ids, pool.input_ids[brute_force])
    assert record["pool"]["size"] == 20 and record["pool"]["fingerprint"] == pool.fingerprint
    assert record["scores"] == pytest.approx([losses[i] for i in brute_force], rel=1e-4)
    assert record["seconds"] >= record["pool_seconds"] >= 0


def test_cross_entropy_counts_only_real_tokens(model):
    ids = random_ids(2, 12)
    short = window_cross_entropy(model, ids, [6, 12])
    with torch.inference_mode():
        alone = float(model(input_ids=ids[:1, :6], labels=ids[:1, :6]).loss)
    assert short[0] == pytest.approx(alone, rel=1e-4)


def test_greedy_coverage_never_adds_fewer_new_tokens_than_another_candidate_would():
    rng = np.random.default_rng(0)
    token_sets = [set(rng.choice(60, size=rng.integers(3, 20), replace=False).tolist()) for _ in range(30)]
    chosen, gains = greedy_coverage(token_sets, 8, subsample=10**6, seed=0)
    seen = set()
    for step, pick in enumerate(chosen):
        others = [len(token_sets[i] - seen) for i in range(30) if i not in chosen[:step]]
        assert gains[step] == len(token_sets[pick] - seen) == max(others)
        seen |= token_sets[pick]
    assert len(set(chosen)) == 8


def test_coverage_subsample_looks_at_only_that_many_candidates():
    token_sets = [set(range(i + 1)) for i in range(50)]  # candidate 49 covers the most
    chosen, _ = greedy_coverage(token_sets, 1, subsample=5, seed=3)
    assert chosen != [49]  # a subsample of 5 rarely holds the best one ...
    assert greedy_coverage(token_sets, 1, subsample=5, seed=3) == (chosen, _)  # ... and is seeded


def test_unique_tokens_normalises_case_and_whitespace():
    tokenizer = char_tokenizer()
    ids = torch.tensor([tokenizer("aA b")["input_ids"]])
    assert normalised_tokens(tokenizer, ids, [4]) == [{"a", "b"}]


def test_activation_kmeans_returns_nsamples_distinct_candidates_nearest_their_centroids(model):
    calibration = build_strategy_calibration("builtin:wiki", TOK, 5, 16, seed=2, mode="concat",
                                             strategy="activation-kmeans", options={"pool_factor": 4, "kmeans_dim": 8},
                                             model=model)
    chosen = calibration.strategy["chosen"]
    assert len(chosen) == len(set(chosen)) == 5 and all(0 <= i < 20 for i in chosen)
    assert sum(calibration.strategy["details"]["cluster_sizes"]) == 20
    # The whole pool kept when the pool is nsamples windows.
    whole = build_strategy_calibration("builtin:wiki", TOK, 5, 16, seed=2, mode="concat",
                                       strategy="activation-kmeans", options={"pool_factor": 1}, model=model)
    assert sorted(whole.strategy["chosen"]) == list(range(5))


def test_nearest_distinct_skips_points_taken_by_earlier_centroids():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    centroids = np.array([[0.1, 0.0], [0.2, 0.0]])
    chosen, gaps = nearest_distinct(points, centroids)
    assert chosen == [0, 1] and gaps == pytest.approx([0.1, 0.8])


def test_layer_features_are_normalised_mean_pooled_layer_outputs(model):
    ids = random_ids(3, 10)
    features = layer_features(model, ids, [10, 7, 10], batch_size=2)
    with torch.inference_mode():
        hidden = model(input_ids=ids[1:2, :7], output_hidden_states=True).hidden_states[1:]
    reference = torch.cat([torch.nn.functional.normalize(h[0].mean(0), dim=0) for h in hidden])
    assert features.shape == (3, len(hidden) * 64)
    assert torch.allclose(features[1], reference, atol=1e-5)


def test_self_calibration_defaults_are_the_papers():
    settings = check_strategy("self-calibration")
    assert (settings["temperature_start"], settings["temperature_end"], settings["ramp_steps"]) == (1.0, 1.0, 10)
    assert settings["temperature_shape"] == "linear" and settings["first_token"] == "auto"


def test_the_temperature_ramps_over_the_first_steps_then_holds():
    # t_i = t_initial + (i / n)(t_final - t_initial) for i <= n, t_final after (Williams et al., section 3.2)
    linear = temperature_schedule(15, 2.0, 0.5, "linear", ramp_steps=10)
    assert linear[0] == 2.0 and linear[5] == pytest.approx(1.25) and linear[10:] == [0.5] * 5
    cosine = temperature_schedule(8, 1.0, 0.0, "cosine", ramp_steps=4)
    assert cosine[0] == 1.0 and cosine[2] == pytest.approx(0.5) and cosine[4:] == [pytest.approx(0.0)] * 4
    assert cosine[1] > 0.75  # slow at the start
    assert temperature_schedule(4, 0.7, 0.1, "constant", ramp_steps=2) == [0.7] * 4
    with pytest.raises(ConfigError, match="at least 1 step"):
        temperature_schedule(4, 1.0, 0.5, "linear", ramp_steps=0)


def test_self_calibration_applies_the_schedule_to_every_generation(model, monkeypatch):
    applied = []
    original = ScheduledTemperature.__call__

    def watched(self, input_ids, scores):
        out = original(self, input_ids, scores)
        applied.append(self.applied[-1])
        return out

    monkeypatch.setattr(ScheduledTemperature, "__call__", watched)
    tokenizer = char_tokenizer(add_bos=True)
    options = {"temperature_start": 2.0, "temperature_end": 0.5, "ramp_steps": 4, "generation_batch_size": 4}
    first = build_strategy_calibration("builtin:wiki", tokenizer, 3, 12, seed=5, strategy="self-calibration",
                                       options=options, model=model)
    assert first.input_ids.shape == (3, 12) and (first.input_ids[:, 0] == tokenizer.bos_token_id).all()
    assert applied[:5] == [2.0, 1.625, 1.25, 0.875, 0.5] and set(applied[5:]) <= {0.5}
    details = first.strategy["details"]
    assert details["ramp_steps"] == 4 and details["temperatures"] == {"first": 2.0, "after_ramp": 0.5}
    assert details["first_token"] == "any" and first.strategy["pool"] is None  # a 98-token vocabulary
    again = build_strategy_calibration("builtin:wiki", tokenizer, 3, 12, seed=5, strategy="self-calibration",
                                       options=options, model=model)
    assert torch.equal(first.input_ids, again.input_ids)


class _Scripted:
    """Stands in for a model's generate: returns the scripted documents (after the prompt's start token), one
    per row, padded with 0 after their EOS, and records the generation config it was given."""

    def __init__(self, documents):
        self.documents, self.configs = list(documents), []

    def __call__(self, input_ids, attention_mask, generation_config, logits_processor):
        self.configs.append(generation_config)
        rows = [self.documents.pop(0) for _ in range(input_ids.shape[0])]
        width = max(len(r) for r in rows)
        out = torch.zeros(len(rows), 1 + width, dtype=torch.long)
        out[:, 0] = input_ids[:, 0]
        for i, row in enumerate(rows):
            out[i, 1 : 1 + len(row)] = torch.tensor(row)
        return out


def test_a_document_ends_at_eos_and_further_generations_fill_the_window(model, monkeypatch):
    tokenizer = char_tokenizer(add_bos=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    scripted = _Scripted([[5, 6, eos], [7, eos], [8, 9, 10, 11, 12, 13], [14, eos], [15, 16, 17, 18, 19, eos]]
                         + [[20, 21, 22, 23, 24, 25]] * 8)
    monkeypatch.setattr(model, "generate", scripted)
    made = build_strategy_calibration("builtin:wiki", tokenizer, 2, 8, strategy="self-calibration", model=model,
                                      options={"generation_batch_size": 1})
    assert made.input_ids.tolist() == [[bos, 5, 6, eos, bos, 7, eos, bos],  # the last document cut at the end
                                       [bos, 14, eos, bos, 15, 16, 17, 18]]  # a new window starts a new document
    details = made.strategy["details"]
    assert details["documents"] == 5 and details["documents_ended_at_eos"] == 4
    config = scripted.configs[0]
    assert config.eos_token_id == [eos] and not config.min_new_tokens  # EOS may end a generation


def test_self_calibration_ends_real_generations_at_eos(monkeypatch):
    tokenizer = char_tokenizer(add_bos=True)
    likely_eos = tiny_model()
    head = likely_eos.lm_head
    likely_eos.lm_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        likely_eos.lm_head.weight.copy_(head.weight)
        likely_eos.lm_head.bias.zero_()
        likely_eos.lm_head.bias[tokenizer.eos_token_id] = 4.0  # EOS about half the time
    made = build_strategy_calibration("builtin:wiki", tokenizer, 2, 32, strategy="self-calibration",
                                      model=likely_eos, options={"generation_batch_size": 4})
    details = made.strategy["details"]
    assert details["documents"] > 2 and details["documents_ended_at_eos"] > 0
    rows = made.input_ids.tolist()
    pairs = [(a, b) for row in rows for a, b in zip(row, row[1:])]
    assert (tokenizer.eos_token_id, tokenizer.bos_token_id) in pairs  # a document ended, the next began
    assert all(b == tokenizer.bos_token_id for a, b in pairs if a == tokenizer.eos_token_id)


def test_the_first_token_can_be_held_to_english_stop_words(model):
    from calib_core.data.strategies.self_calibration import english_stop_word_tokens, first_token_rule

    tokenizer = char_tokenizer(add_bos=True)
    allowed = english_stop_word_tokens(tokenizer)  # one-character words of spaCy's list, either case
    assert sorted(tokenizer.convert_ids_to_tokens(allowed)) == ["A", "I", "a", "i"]
    held = build_strategy_calibration("builtin:wiki", tokenizer, 8, 6, strategy="self-calibration", model=model,
                                      options={"first_token": "english-stop-word", "ramp_steps": 1,
                                               "generation_batch_size": 8})
    assert set(held.input_ids[:, 1].tolist()) <= set(allowed)
    assert held.strategy["details"]["first_token"] == "english-stop-word"
    free = build_strategy_calibration("builtin:wiki", tokenizer, 8, 6, strategy="self-calibration", model=model,
                                      options={"first_token": "any", "ramp_steps": 1, "generation_batch_size": 8})
    assert not set(free.input_ids[:, 1].tolist()) <= set(allowed)

    class Multilingual:
        def __len__(self):
            return 262_144  # Gemma 3's vocabulary

    assert first_token_rule("auto", Multilingual()) == "english-stop-word"
    assert first_token_rule("auto", tokenizer) == "any" and first_token_rule("any", Multilingual()) == "any"


def test_self_calibration_at_a_tiny_temperature_is_greedy_decoding(model):
    tokenizer = char_tokenizer(add_bos=True)
    made = build_strategy_calibration("builtin:wiki", tokenizer, 1, 10, strategy="self-calibration", model=model,
                                      options={"temperature_start": 0.01, "temperature_shape": "constant"})
    ids = torch.tensor([[tokenizer.bos_token_id]])
    with torch.inference_mode():
        for _ in range(9):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert tokenizer.eos_token_id not in ids.tolist()[0]  # one document: the reference needs no restart
    assert torch.equal(made.input_ids, ids)


def test_icl_format_windows_are_answered_news_topic_items_of_the_calibration_part():
    tokenizer = char_tokenizer()
    made = build_strategy_calibration("builtin:wiki", tokenizer, 4, 300, seed=0, strategy="icl-format",
                                      options={"shots": 2})
    text = "".join(tokenizer.convert_ids_to_tokens(made.input_ids.flatten().tolist()))
    assert made.input_ids.shape == (4, 300)
    assert "Headline: " in text and "Topic: " in text
    assert "Passage: " not in text and "Answer: " not in text  # not the cloze metric's items or format
    details = made.strategy["details"]
    assert details["task"] == "news-topic" and details["items"] == 2 * details["prompts"]
    assert made.strategy["source_read"] is False


def test_icl_format_items_are_disjoint_from_every_evaluation():
    from calib_core.assets import builtin_documents
    from calib_core.data.strategies.icl_format import news_topic_items

    news = builtin_documents("news")
    calib = [d for d in news if d["id"].startswith("bbc/") and d["split"] == "calib"]
    held_out = {" ".join(d["text"].split()) for d in news if d["split"] == "eval"}
    items = news_topic_items(len(calib), seed=0)
    openings = [item.split("\nArticle: ")[1].split("\nTopic: ")[0].removesuffix(" ...") for item in items]
    assert len(set(openings)) > 0.9 * len(calib)  # every article once (the corpus repeats a few stories)
    assert not any(opening in text for opening in openings for text in held_out)
    topics = {item.rsplit("Topic: ", 1)[1] for item in items}
    assert topics == {"business", "entertainment", "politics", "sports", "tech"}


def test_icl_format_arithmetic_items_are_worked_and_correct():
    from calib_core.data.strategies.icl_format import arithmetic_items

    worked = arithmetic_items(50, seed=1, rationale=True)
    for item in worked:
        expression = item.split("What is ")[1].split("?")[0]
        assert item.endswith(f"The answer is {eval(expression)}.") and "First, " in item
    plain = arithmetic_items(50, seed=1, rationale=False)
    assert [p.split("\n")[0] for p in plain] == [w.split("\n")[0] for w in worked]  # the same questions
    assert all("First, " not in p for p in plain)


def test_revised_strategies_never_share_a_point_key_with_their_earlier_version():
    from calib_core.studies.tournament import ROUND_ONE, ROUND_ONE_RUNS, TournamentSettings

    committed = pd.read_csv(ROUND_ONE_RUNS)
    first = TournamentSettings(**ROUND_ONE)
    keys = {p.strategy: set() for p in first.points("smollm2-135m")}
    for point in first.points("smollm2-135m"):
        keys[point.strategy].add(point.key)
    assert keys["least-ppl"] <= set(committed["point_key"])  # unchanged: its earlier runs keep their keys
    for revised in ("self-calibration", "icl-format"):
        assert STRATEGIES[revised].revision == 1 and not keys[revised] & set(committed["point_key"])


def test_random_strategy_is_todays_draw():
    draw = build_calibration("builtin:news", TOK, 4, 32, seed=3, mode="document")
    same = build_strategy_calibration("builtin:news", TOK, 4, 32, seed=3, mode="document")
    assert same.fingerprint == draw.fingerprint and same.strategy is None


def test_mix_shares_windows_by_weight_and_draws_each_source_as_itself():
    mix = parse_mix("builtin:wiki=2,builtin:code=1,random=0.25")
    assert mix.counts(8) == ([4, 2], 2)
    assert parse_mix("builtin:wiki,builtin:code,builtin:news").counts(4) == ([2, 1, 1], 0)  # remainder: earlier
    drawn = build_calibration("mix:builtin:wiki=2,builtin:code=1,random=0.25", TOK, 8, 32, seed=1, mode="concat")
    wiki = build_calibration("builtin:wiki", TOK, 4, 32, seed=1, mode="concat")
    code = build_calibration("builtin:code", TOK, 2, 32, seed=1, mode="concat")
    assert torch.equal(drawn.input_ids[:4], wiki.input_ids) and torch.equal(drawn.input_ids[4:6], code.input_ids)
    assert drawn.input_ids[6:].max() < len(TOK) and drawn.mix["random_rows"] == 2
    assert [c["windows"] for c in drawn.describe()["mix"]["sources"]] == [4, 2]
    alone = build_calibration("mix:builtin:wiki", TOK, 4, 32, seed=1, mode="concat")
    assert alone.fingerprint == wiki.fingerprint


@pytest.mark.parametrize("spec, message", [
    ("mix:builtin:wiki=x", "is not a number"),
    ("mix:builtin:wiki=0,builtin:code=0", "weight > 0"),
    ("mix:builtin:wiki=1,random=1", "random-token fraction"),
    ("mix:builtin:wiki=-1", ">= 0"),
    ("mix:builtin:wiki=1,,builtin:code=1", "empty entry"),
    ("mix:builtin:wiki=1,nope:x=1", "Bad source 'nope:x'"),
    ("mix:mix:builtin:wiki=1", "another mix"),
])
def test_bad_mixes_are_refused_with_what_is_wrong(spec, message):
    with pytest.raises(SourceError, match=message):
        parse_source(spec)


def test_bad_strategy_input_is_refused():
    with pytest.raises(ConfigError, match="Unknown calibration strategy 'best'"):
        check_strategy("best")
    with pytest.raises(ConfigError, match="has no setting shots"):
        check_strategy("least-ppl", {"shots": 3})
    with pytest.raises(ConfigError, match="pool_factor must be in"):
        check_strategy("least-ppl", {"pool_factor": 0})
    with pytest.raises(ConfigError, match="temperature_shape must be one of"):
        check_strategy("self-calibration", {"temperature_shape": "zigzag"})


def test_a_token_pool_smaller_than_nsamples_is_refused(tmp_path):
    path = tmp_path / "ids.pt"
    torch.save(random_ids(3, 16), path)
    with pytest.raises(SourceError, match="has 3 windows, fewer than nsamples 4"):
        build_strategy_calibration(f"tokens:{path}", TOK, 4, 16, strategy="unique-tokens")


def test_bad_strategy_fails_before_any_model_loads(tmp_path):
    spec = RunSpec(model=str(tmp_path / "no-such-model"), strategy="least-ppl", strategy_options={"kmeans_dim": 3},
                   nsamples=2, seqlen=16)
    with pytest.raises(ConfigError, match="has no setting kmeans_dim"):
        run_prune(spec, store=RunStore(tmp_path / "runs.sqlite"))
    with pytest.raises(ConfigError, match="cannot run on a streamed model"):
        run_prune(RunSpec(model=str(tmp_path / "none"), strategy="least-ppl", stream=True),
                  store=RunStore(tmp_path / "runs.sqlite"))
    with pytest.raises(SourceError, match="is not a number"):
        run_prune(RunSpec(model=str(tmp_path / "none"), calib="mix:builtin:wiki=a"),
                  store=RunStore(tmp_path / "runs.sqlite"))


def test_cli_saves_a_strategy_set_that_a_run_uses_as_is(tmp_path, capsys):
    folder = save_tiny_folder(tmp_path / "tiny")
    assert cli_main(["calib", "--model", str(folder), "--name", "covered", "--strategy", "unique-tokens",
                     "--nsamples", "3", "--seqlen", "16", "--mode", "concat", "--pool-factor", "4"]) == 0
    out = capsys.readouterr().out
    assert "saved 3 windows x 16 tokens of builtin:wiki chosen by unique-tokens (pool_factor=4)" in out
    meta = sets.load_set("covered")["metadata"]
    assert meta["kind"] == "windows" and meta["calibration"]["strategy"]["name"] == "unique-tokens"
    fingerprint = meta["calibration"]["fingerprint"]
    assert cli_main(["prune", "--model", str(folder), "--calib", "set:covered", "--nsamples", "3", "--seqlen", "16",
                     "--eval-windows", "1", "--report", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["calibration"]["fingerprint"] == fingerprint
    assert record["calibration"]["strategy"]["chosen"] == meta["calibration"]["strategy"]["chosen"]


def test_cli_prune_records_the_strategy_and_its_reproduce_command(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    assert cli_main(["prune", "--model", str(folder), "--nsamples", "2", "--seqlen", "16", "--eval-windows", "1",
                     "--strategy", "least-ppl", "--pool-factor", "3", "--report", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    strategy = record["calibration"]["strategy"]
    assert strategy["name"] == "least-ppl" and strategy["settings"]["pool_factor"] == 3
    assert len(strategy["pool_scores"]) == 6 and len(strategy["chosen"]) == 2
    assert record["job"]["strategy"] == "least-ppl" and record["job"]["strategy_options"] == {"pool_factor": 3}
    command = reproduce_command(RunSpec(model="m", strategy="least-ppl", strategy_options={"pool_factor": 3}))
    assert "--strategy least-ppl --pool-factor 3" in command
    assert run_spec(build_parser().parse_args(shlex.split(command)[3:])).strategy_options == {"pool_factor": 3}
    assert cli_main(["prune", "--model", str(folder), "--strategy", "least-ppl", "--shots", "2"]) == 2


def test_sweep_strategies_axis_shares_each_selection_across_points(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    grid = SweepGrid.from_dict(dict(name="s", model=str(folder), strategies=["random", "least-ppl"],
                                    methods=["wanda", "magnitude"], sparsities=[0.5, 0.6], nsamples=[2], seqlen=16,
                                    seeds=[0], eval_windows=1))
    assert len(grid.points()) == 2 * 2 + 2  # magnitude once per setting, whatever the strategy
    store = RunStore(tmp_path / "runs.sqlite")
    summary = run_sweep(grid, store)
    assert summary.ran == 6 and not summary.failed
    records = [r["record"] for r in store.list() if r["record"]["config"]["method"] == "wanda"]
    chosen = [r["calibration"]["strategy"] for r in records if r["calibration"].get("strategy")]
    assert sorted(s["reused"] for s in chosen) == [False, True]  # chosen once on the dense model
    assert chosen[0]["chosen"] == chosen[1]["chosen"]
    with pytest.raises(ConfigError, match="Unknown calibration strategy"):
        SweepGrid.from_dict(dict(name="s", strategies=["nope"]))
    with pytest.raises(ConfigError, match="a name or a mapping"):
        SweepGrid.from_dict(dict(name="s", strategies=[3]))


def test_every_strategy_has_an_explanation_and_checked_defaults():
    for strategy in STRATEGIES.values():
        assert strategy.summary and len(strategy.explain) > 40
        check_strategy(strategy.name)


def test_tournament_runs_resumes_and_reports(tmp_path):
    from calib_core.studies.tournament import TournamentSettings, run_tournament, tournament_frame
    from calib_core.studies.tournament_report import write_tournament_report

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    settings = TournamentSettings(models=[folder], strategies=["random", "unique-tokens"], methods=["wanda"],
                                  settings=[0.5], seeds=2, nsamples=2, seqlen=16, eval=["builtin:wiki", "builtin:code"],
                                  eval_windows=1, cloze_items=2, early_seeds=1, extra_sources=["builtin:code"],
                                  name="t")
    points = settings.points(folder)
    assert len(points) == 4 * 2 and [p.seed for p in points] == [0] * 4 + [1] * 4  # early seeds first
    store = RunStore(tmp_path / "runs.sqlite")
    assert run_tournament(settings, store).ran == 8
    assert run_tournament(settings, store).ran == 0  # resumes: nothing left
    assert {r["record"]["job"]["dtype"] for r in store.sweep_runs("t")} == {settings.resolved_dtype()}
    frame = tournament_frame(settings, store)
    assert sorted(frame["entry"].unique()) == ["builtin:code", "mix", "random", "unique-tokens"]
    assert frame["cloze acc (mean of domains)"].between(0, 1).all()
    report = write_tournament_report(settings, store, tmp_path / "out").read_text()
    assert "Fixed 2026-12-07, before any of its runs" in report and "## Selection cost" in report
    assert "unique-tokens" in report and "MDE" in report and "% [" in report
    assert "the mix against each domain's own single source" in report and "vs builtin:code" in report
    assert "## Published claims on our models" in report and "Machine-hours" in report
    assert "8 of 8 points finished" in report
    assert (tmp_path / "out" / "strategies-runs.csv").exists()
    reference = json.loads((tmp_path / "runs.sqlite").parent.joinpath("t-reference.json").read_text())
    assert reference[folder]["pool_forward_seconds"] > 0 and "ppl builtin:code" in reference[folder]["dense"]

    # Another machine carries the finished points over from the report's runs CSV, minus one it must rerun.
    runs_csv = tmp_path / "out" / "strategies-runs.csv"
    written = pd.read_csv(runs_csv)
    assert set(written["origin"]) == {"this run store"} and written["point_key"].is_unique
    assert (written["pool_forward_seconds"] == reference[folder]["pool_forward_seconds"]).all()
    assert (written["run_seconds"] > 0).all()
    from calib_core.provenance import environment_versions

    here = environment_versions()
    assert (written["cpu"] == here["cpu"]).all()  # where each row was computed
    assert (written["cpu_half_arithmetic"] == here["cpu_half_arithmetic"]).all()
    rerun = written["point_key"].iloc[-1]
    written["pool_forward_seconds"] = 1e6  # the other machine's unit stays with its rows
    written.iloc[:-1].to_csv(tmp_path / "earlier.csv", index=False)
    carried = dataclasses.replace(settings, previous=str(tmp_path / "earlier.csv"))
    (tmp_path / "elsewhere").mkdir()
    elsewhere = RunStore(tmp_path / "elsewhere" / "runs.sqlite")
    summary = run_tournament(carried, elsewhere)
    assert (summary.ran, summary.skipped) == (1, 7)
    assert [r["point_key"] for r in elsewhere.sweep_runs("t")] == [rerun]
    merged = tournament_frame(carried, elsewhere)
    assert len(merged) == 8 and merged["point_key"].is_unique
    assert merged.groupby("origin").size().to_dict() == {"earlier.csv": 7, "this run store": 1}
    carried_report = write_tournament_report(carried, elsewhere, tmp_path / "out2").read_text()
    assert "8 of 8 points finished" in carried_report and "7 of them were read from" in carried_report
    assert f"Computed on: 8 rows {here['cpu']} (half arithmetic: {here['cpu_half_arithmetic']})" in carried_report
    units = pd.read_csv(tmp_path / "out2" / "strategies-runs.csv").set_index("origin")["pool_forward_seconds"]
    assert (units["earlier.csv"] == 1e6).all() and units["this run store"] != 1e6
    # A third machine writes the report from the CSV alone: the dense reference comes from beside it.
    dense = json.loads((tmp_path / "out" / "strategies-dense.json").read_text())
    assert dense == {folder: {"dtype": settings.resolved_dtype(), "dense": reference[folder]["dense"]}}
    (tmp_path / "strategies-dense.json").write_text(json.dumps(dense))
    (tmp_path / "third").mkdir()
    bare = RunStore(tmp_path / "third" / "runs.sqlite")
    third = write_tournament_report(carried, bare, tmp_path / "out3").read_text()
    assert "Dense model (from `strategies-dense.json` beside" in third
    assert f"ppl builtin:code {reference[folder]['dense']['ppl builtin:code']:.2f}" in third
    assert json.loads((tmp_path / "out3" / "strategies-dense.json").read_text()) == dense
    # The second machine has its own reference too: the earlier runs' one stays the report's, its own is shown.
    earlier_dense = {folder: {**dense[folder], "dense": {**dense[folder]["dense"], "ppl builtin:code": 12345.0}}}
    (tmp_path / "strategies-dense.json").write_text(json.dumps(earlier_dense))
    both = write_tournament_report(carried, elsewhere, tmp_path / "out5").read_text()
    assert "Dense model (from `strategies-dense.json` beside" in both and "ppl builtin:code 12345.00" in both
    own_code = json.loads((tmp_path / "elsewhere" / "t-reference.json").read_text())[folder]["dense"]["ppl builtin:code"]
    assert f"measured again by this run store's machine ({here['cpu']}" in both and f"ppl builtin:code {own_code:.2f}" in both
    assert json.loads((tmp_path / "out5" / "strategies-dense.json").read_text()) == earlier_dense
    other_dtype = {folder: {**dense[folder], "dtype": "float16"}}  # measured in another dtype: not stated
    (tmp_path / "strategies-dense.json").write_text(json.dumps(other_dtype))
    assert "Dense model" not in write_tournament_report(carried, bare, tmp_path / "out4").read_text()
    # A CSV of other settings carries nothing (the point key names seqlen, eval, dtype ...), one without keys fails.
    assert tournament_frame(dataclasses.replace(carried, seqlen=32), RunStore(tmp_path / "x.sqlite")).empty
    written.drop(columns=["point_key"]).to_csv(tmp_path / "keyless.csv", index=False)
    with pytest.raises(ConfigError, match="no point_key column"):
        run_tournament(dataclasses.replace(settings, previous=str(tmp_path / "keyless.csv")), elsewhere)


def test_a_continued_tournament_keeps_the_earlier_runs_dtype_and_says_how_this_cpu_multiplies_it(
        tmp_path, monkeypatch, capsys):
    from calib_core import devices
    from calib_core.studies.tournament import TournamentSettings, dtype_notice, run_tournament

    monkeypatch.setattr(devices, "native_dtype", lambda device="auto": "float32")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    settings = TournamentSettings(models=["smollm2-135m"], strategies=["random"], methods=["wanda"], settings=[0.5],
                                  seeds=2, early_seeds=1, mix=None, name="t")
    half = dataclasses.replace(settings, dtype="bfloat16").points("smollm2-135m")
    earlier = tmp_path / "earlier.csv"
    pd.DataFrame({"point_key": [half[0].key], "ppl": [12.0]}).to_csv(earlier, index=False)
    continued = dataclasses.replace(settings, previous=str(earlier))
    assert settings.resolved_dtype() == "float32" and continued.resolved_dtype() == "bfloat16"
    assert [p.key for p in continued.points("smollm2-135m")] == [p.key for p in half]
    assert "multiply in float32 and round to bfloat16" in dtype_notice(continued)
    assert dtype_notice(settings) is None  # nothing earlier: float32, native
    assert dtype_notice(dataclasses.replace(continued, dtype="float32")) is None  # a separate tournament
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert dtype_notice(continued) is None  # a CPU with bf16 arithmetic: nothing to say
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    # Rows of no point of this tournament say nothing about its dtype.
    pd.DataFrame({"point_key": ["0" * 16]}).to_csv(earlier, index=False)
    assert continued.resolved_dtype() == "float32"
    pd.DataFrame({"point_key": [p.key for p in half]}).to_csv(earlier, index=False)
    assert continued.resolved_dtype() == "bfloat16"
    reference = {"smollm2-135m": {"dtype": "bfloat16", "pool_forward_seconds": 1.0, "dense": {"ppl": 10.0}}}
    (tmp_path / "t-reference.json").write_text(json.dumps(reference))
    events = []
    store = RunStore(tmp_path / "runs.sqlite")
    assert run_tournament(continued, store, on_event=events.append).ran == 0  # nothing left: no model loaded
    assert not any("multiply in float32" in e.message for e in events)  # and no notice about running
    import threading

    from calib_core.errors import PruningCancelled

    pd.DataFrame({"point_key": [half[0].key]}).to_csv(earlier, index=False)
    stop = threading.Event()
    stop.set()  # a point is left: the notice comes before it, the cancel stops it from loading a model
    with pytest.raises(PruningCancelled):
        run_tournament(continued, store, on_event=events.append, cancel=stop)
    assert any("has no arithmetic for" in e.message for e in events)
    # The CLI passes --dtype: float32 names other points, so none of the earlier rows count as finished.
    from calib_core.studies.tournament import QUICK

    quick = TournamentSettings(**QUICK, dtype="bfloat16")
    keys = [p.key for model in quick.models for p in quick.points(model)]
    pd.DataFrame({"point_key": keys}).to_csv(earlier, index=False)
    common = ["tournament", "--quick", "--dry-run", "--previous", str(earlier)]
    assert cli_main(common) == 0
    assert capsys.readouterr().out.strip().endswith(f"{len(keys)}/{len(keys)} points finished")
    assert cli_main(common + ["--dtype", "float32"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"0/{len(keys)} points finished")


def test_the_committed_tournament_runs_are_read_in_their_own_dtype_on_any_machine(monkeypatch):
    from calib_core import devices
    from calib_core.studies.tournament import ROUND_ONE, ROUND_ONE_RUNS, TournamentSettings, previous_frame

    committed = ROUND_ONE_RUNS
    rows = pd.read_csv(committed)
    # The revised strategies' runs are no longer points of the first protocol (their keys name the revision).
    current = rows[~rows["entry"].isin([s.name for s in STRATEGIES.values() if s.revision])]
    for native in ("float32", "bfloat16", "float16"):
        monkeypatch.setattr(devices, "native_dtype", lambda device="auto", native=native: native)
        settings = TournamentSettings(**ROUND_ONE, previous=committed)
        assert settings.resolved_dtype() == "bfloat16"
        assert len(previous_frame(settings)) == len(current) == 300  # every other committed row is a point


def test_a_model_based_selection_runs_with_the_model_on_the_jobs_device(tmp_path, monkeypatch):
    import contextlib

    from calib_core.runs import pipeline

    placed = []

    @contextlib.contextmanager
    def recorded(model, device, stage, what, emit):
        placed.append((device, what))
        yield device

    monkeypatch.setattr(pipeline, "on_job_device", recorded)
    folder = str(save_tiny_folder(tmp_path / "tiny"))
    store = RunStore(tmp_path / "runs.sqlite")
    for strategy in ("unique-tokens", "activation-kmeans"):
        run_prune(RunSpec(model=folder, strategy=strategy, nsamples=2, seqlen=16), store=store)
    assert placed == [("auto", "the activation-kmeans selection")]  # model-free: nothing to place
