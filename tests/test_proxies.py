"""The advisor's mechanism-based proxies against independent references on a tiny model: the dense channel
norms against what the engine itself measures when it prunes nothing, the norm divergence against numpy,
and the predicted masks against the masks the methods' own code computes from the same statistics."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from calib_core.data import sets
from calib_core.metrics.proxies import (
    dense_channel_norms,
    norm_divergence,
    packed_jaccard,
    packed_masks,
    predicted_masks,
)
from calib_core.models import decoder_blocks, prunable_modules, weight_matrix
from calib_core.prune import PruneConfig
from calib_core.prune.engine import Pruner
from calib_core.prune.masks import parse_pattern
from calib_core.prune.stats import InputStats
from calib_core.prune.wanda import wanda_mask
from tests.tiny import random_ids, tiny_model


def _engine_norms(model, ids) -> dict:
    """What the engine measures: at sparsity 0 nothing is pruned, so every block sees dense inputs."""
    stored = {}
    Pruner(copy.deepcopy(model), PruneConfig(device="cpu", method="wanda", sparsity=0.0),
           on_channels=lambda index, arrays: stored.update(arrays)).run(ids)
    return {key.removesuffix("/norm"): value for key, value in stored.items() if key.endswith("/norm")}


def test_dense_channel_norms_are_what_the_engine_measures_when_it_prunes_nothing():
    model, ids = tiny_model(), random_ids(5, 20, seed=3)
    norms = dense_channel_norms(model, ids, batch_size=2)
    engine = _engine_norms(model, ids)
    assert {f"{b}/{name}" for b, name in norms.norms} == set(engine)
    for (block, name), values in norms.norms.items():
        np.testing.assert_allclose(values.numpy(), engine[f"{block}/{name}"], rtol=2e-4, atol=1e-6)
    assert (norms.windows, norms.tokens) == (5, 100)


def test_padding_is_not_counted():
    model, ids = tiny_model(), random_ids(3, 20, seed=4)
    short = ids.clone()
    short[0, 12:] = 0  # a window of 12 real tokens, padded
    padded = dense_channel_norms(model, short, lengths=[12, 20, 20])
    # the same windows with the padding cut off, one at a time (a causal model: the pad never changes them)
    alone = [dense_channel_norms(model, short[i:i + 1, :n]) for i, n in enumerate([12, 20, 20])]
    for key, values in padded.norms.items():
        expected = torch.sqrt(sum(a.norms[key].square() for a in alone) / 3)
        torch.testing.assert_close(values, expected, rtol=2e-4, atol=1e-6)


def test_norm_divergence_is_the_mean_absolute_log2_ratio():
    model = tiny_model()
    a = dense_channel_norms(model, random_ids(4, 16, seed=1))
    b = dense_channel_norms(model, random_ids(4, 16, seed=2))
    expected = np.mean([np.abs(np.log2(a.norms[k].numpy() / b.norms[k].numpy())).mean() for k in a.norms])
    assert norm_divergence(a, b) == pytest.approx(expected, rel=1e-5)
    assert norm_divergence(a, a) == 0.0


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_predicted_wanda_masks_are_the_masks_wanda_computes_from_those_statistics(pattern):
    model = tiny_model()
    candidate = dense_channel_norms(model, random_ids(4, 16, seed=1))
    target = dense_channel_norms(model, random_ids(4, 16, seed=2))
    config = PruneConfig(method="wanda", sparsity=0.5, pattern=pattern)

    def wanda_kept(norms):  # Wanda's own code, given InputStats holding exactly these norms
        kept = {}
        for index, block in enumerate(decoder_blocks(model)):
            for name, module in prunable_modules(block).items():
                values = norms.norms[(index, name)]
                stats = InputStats(values.numel(), "cpu")
                stats.sum_sq, stats.samples = values.square() * norms.windows, norms.windows
                kept[(index, name)] = ~wanda_mask(weight_matrix(module), stats, 0.5, parse_pattern(pattern))
        return kept

    ours, theirs = predicted_masks(model, candidate, config), wanda_kept(candidate)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    target_kept = wanda_kept(target)
    both = sum(int((theirs[k] & target_kept[k]).sum()) for k in theirs)
    either = sum(int((theirs[k] | target_kept[k]).sum()) for k in theirs)
    mine, theirs_packed = packed_masks(model, candidate, config), packed_masks(model, target, config)
    assert packed_jaccard(mine, theirs_packed) == pytest.approx(both / either)
    assert packed_jaccard(mine, mine) == 1.0


@pytest.mark.parametrize("method", ["wanda", "ria"])
def test_a_predicted_mask_of_the_first_block_is_the_mask_pruning_chooses(method):
    """Block 0 sees the embeddings in both: there the prediction is exact, not an approximation."""
    model, ids = tiny_model(), random_ids(4, 20, seed=5)
    predicted = predicted_masks(model, dense_channel_norms(model, ids), PruneConfig(method=method, sparsity=0.5))
    pruned = copy.deepcopy(model)
    Pruner(pruned, PruneConfig(device="cpu", method=method, sparsity=0.5)).run(ids)
    for name, module in prunable_modules(decoder_blocks(pruned)[0]).items():
        assert torch.equal(predicted[(0, name)], weight_matrix(module) != 0), name


def test_a_predicted_sparsegpt_mask_of_the_first_block_is_the_mask_pruning_chooses():
    """SparseGPT's prediction runs the engine's own block-wise selection on the set's Hessian: in block 0,
    where both see the embeddings, it is the mask the pruning chooses, exactly when the Hessian is summed in the
    engine's order (one window per forward on the CPU); batched, the last bits of H differ and the weight
    updates carry a near-tie's flip into later columns."""
    model, ids = tiny_model(), random_ids(4, 20, seed=5)
    for setting in ({"sparsity": 0.5}, {"pattern": "2:4"}):
        config = PruneConfig(method="sparsegpt", sparsegpt_blocksize=16, **setting)
        predicted = predicted_masks(model, dense_channel_norms(model, ids, hessians=True, batch_size=1), config)
        batched = predicted_masks(model, dense_channel_norms(model, ids, hessians=True, batch_size=4), config)
        pruned = copy.deepcopy(model)
        Pruner(pruned, PruneConfig(device="cpu", method="sparsegpt", sparsegpt_blocksize=16, **setting)).run(ids)
        for name, module in prunable_modules(decoder_blocks(pruned)[0]).items():
            kept = weight_matrix(module) != 0
            assert torch.equal(predicted[(0, name)], kept), (setting, name)
            assert (batched[(0, name)] == kept).float().mean() > 0.99, (setting, name)
    with pytest.raises(ValueError, match="need the sets' Hessians"):
        predicted_masks(model, dense_channel_norms(model, ids), PruneConfig(method="sparsegpt", sparsity=0.5))


def test_the_sparsegpt_proxy_selects_across_rows_unlike_wandas_per_row_score():
    model = tiny_model()
    stats = dense_channel_norms(model, random_ids(4, 16, seed=1), hessians=True)
    sparsegpt = predicted_masks(model, stats, PruneConfig(method="sparsegpt", sparsity=0.5))
    wanda = predicted_masks(model, stats, PruneConfig(method="wanda", sparsity=0.5))
    kept_per_row = torch.cat([k.sum(1) for k in sparsegpt.values()]).float()
    assert kept_per_row.std() > 0  # a threshold per column block across rows, not half of every row
    assert all(torch.equal(k.sum(1), torch.full_like(k.sum(1), k.shape[1] // 2)) for k in wanda.values())
    assert not all(torch.equal(sparsegpt[key], wanda[key]) for key in wanda)


def test_predicted_owl_masks_follow_their_allocation():
    from calib_core.prune.owl import outlier_ratio, owl_sparsities

    model = tiny_model()
    stats = dense_channel_norms(model, random_ids(4, 16, seed=1))
    owl = predicted_masks(model, stats, PruneConfig(method="owl", sparsity=0.5, owl_lambda=0.08, owl_m=5))
    ratios = []
    for index, block in enumerate(decoder_blocks(model)):
        scores = [weight_matrix(m).abs().float() * stats.norms[(index, n)] for n, m in prunable_modules(block).items()]
        ratios.append(outlier_ratio(scores, 5))
    for index, planned in enumerate(owl_sparsities(ratios, 0.5, 0.08)):
        block = [owl[(i, n)] for i, n in owl if i == index]
        achieved = 1 - sum(int(k.sum()) for k in block) / sum(k.numel() for k in block)
        assert achieved == pytest.approx(planned, abs=0.02), index


def test_advise_ranks_candidates_for_a_target_says_it_is_unvalidated_and_verifies(tmp_path, capsys):
    from calib_core.cli import main as cli_main
    from calib_core.runs import RunStore
    from tests.tiny import save_tiny_folder

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    sets.save_set("written", [{"text": f"the model wrote this, number {i}, at some length. " * 6} for i in range(6)],
                  {"kind": sets.SELF_GENERATED})
    # 70% is outside the validation's fixed grid (50%, 60%, 2:4), so the case is unvalidated
    base = ["advise", "--model", folder, "--dtype", "float32", "--method", "wanda", "--sparsity", "0.7",
            "--nsamples", "2", "--seqlen", "16", "--target-windows", "2", "--target", "builtin:code"]
    assert cli_main(base + ["--candidates", "builtin:wiki", "builtin:code", "builtin:news@unique-tokens", "set:written",
                            "--verify", "2", "--eval-windows", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["rank", "candidate", "predicted_jaccard"]
    assert [line.split()[0] for line in lines[1:5]] == ["1", "2", "3", "4"]
    named = [next(c for c in ("builtin:news by unique-tokens", "builtin:wiki", "builtin:code", "set:written")
                  if c in line) for line in lines[1:5]]
    assert sorted(named) == ["builtin:code", "builtin:news by unique-tokens", "builtin:wiki", "set:written"]
    assert "is not validated for wanda 70% with target builtin:code" in out
    assert "ranked by predicted_jaccard: no proxy was validated for wanda 70%." in out  # the default, said
    # the one self-generated candidate is named with the validation's caution about such text
    caution = next(line for line in lines if "text the model wrote itself" in line)
    assert caution.startswith("set:written: text the model wrote itself.")
    runs = RunStore().list()
    assert len(runs) == 2 and [r["origin"] for r in runs] == ["cli", "cli"]  # the top 2, pruned and measured
    assert "ppl builtin:code" in out


def test_self_generated_candidates_are_the_self_calibration_strategy_and_sets_the_model_wrote():
    from calib_core.studies.advisor import self_generated, self_generated_caution

    sets.save_set("written", [{"text": "a text the model wrote."}], {"kind": sets.SELF_GENERATED})
    sets.save_set("uploaded", [{"text": "a text a person wrote."}], {"kind": "source", "source": "builtin:wiki"})
    assert self_generated("builtin:wiki", "self-calibration") and self_generated("set:written", "random")
    assert not self_generated("builtin:wiki", "random") and not self_generated("set:uploaded", "least-ppl")
    ranked = pd.DataFrame({"candidate": ["builtin:wiki", "set:uploaded", "builtin:wiki by self-calibration"],
                           "source": ["builtin:wiki", "set:uploaded", "builtin:wiki"],
                           "strategy": ["random", "random", "self-calibration"]})
    caution = self_generated_caution(ranked)
    assert caution.startswith("builtin:wiki by self-calibration: text the model wrote itself.")
    assert "set:uploaded" not in caution and "8 of 24" in caution
    assert self_generated_caution(ranked.head(2)) is None


def test_the_validation_note_quotes_the_matching_cases_and_says_when_the_model_was_not_validated(tmp_path):
    from calib_core.studies.advisor import VALIDATION_TABLE, validation_note

    table = tmp_path / "validation.csv"
    table.write_text("model,method,setting,target,proxy,spearman,kendall,spearman_low,spearman_high,candidates,seeds\n"
                     "m1,wanda,50%,builtin:code,norm_divergence,0.8,0.6,0.5,0.9,7,3\n"
                     "m2,wanda,50%,builtin:code,norm_divergence,0.4,0.2,0.1,0.6,7,3\n"
                     "m1,wanda,60%,builtin:code,norm_divergence,-0.3,-0.2,-0.5,0.1,7,3\n")
    found = validation_note("norm_divergence", "wanda", "50%", "builtin:code", "m1", table=table)
    note = found.text
    assert note.startswith("Validated (wanda 50%, target builtin:code")
    # mean Spearman 0.6 (and a table without costs): weak, and the note says to check
    assert found.verdict == "weak" and not found.predicts and "Verdict: weak" in note and "--verify K" in note
    assert "m1: Spearman 0.80 [0.50, 0.90], Kendall 0.60, 7 candidates" in note and "m2: Spearman 0.40" in note
    assert "not among the validated models" not in note
    assert "other/model was not among the validated models" in validation_note(
        "norm_divergence", "wanda", "50%", "builtin:code", "other/model", table=table).text
    for case in [("predicted_jaccard", "wanda", "50%", "builtin:code"), ("norm_divergence", "sparsegpt", "50%",
                 "builtin:code"), ("norm_divergence", "wanda", "2:4", "builtin:code"),
                 ("norm_divergence", "wanda", "50%", "builtin:wiki")]:
        unvalidated = validation_note(*case, table=table)
        assert unvalidated.text.startswith("Warning: ") and unvalidated.verdict == "unvalidated", case
    # another target with a validated method and setting: the proxy's record there is quoted
    elsewhere = validation_note("norm_divergence", "wanda", "50%", "my/own.txt", table=table).text
    assert "On the validated targets (builtin:code) with wanda 50% its Spearman ranged from 0.40 to 0.80" in elsewhere
    assert "No validation has been recorded yet" in validation_note(
        "norm_divergence", "wanda", "50%", "builtin:code", table=tmp_path / "absent.csv").text
    # with noise ceilings: each is quoted, and where every model's is low the note says the choice matters little
    ceilings = tmp_path / "ceilings.csv"
    ceilings.write_text("model,method,setting,target,proxy,spearman,kendall,spearman_low,spearman_high,seed_agreement,"
                        "noise_ceiling,candidates,seeds,cost_share\n"
                        "m1,wanda,50%,builtin:code,norm_divergence,0.2,0.1,-0.5,0.9,0.1,0.40,10,3,0.05\n"
                        "m2,wanda,50%,builtin:code,norm_divergence,0.1,0.1,-0.5,0.6,0.05,0.30,10,3,0.05\n"
                        "m1,wanda,60%,builtin:code,norm_divergence,0.7,0.5,0.4,0.9,0.8,0.96,10,3,0.05\n"
                        "m2,wanda,60%,builtin:code,norm_divergence,0.3,0.2,0.1,0.6,0.05,0.30,10,3,0.05\n"
                        "m1,wanda,50%,builtin:news,norm_divergence,0.9,0.8,0.6,1.0,0.9,0.98,10,3,0.05\n"
                        "m2,wanda,50%,builtin:news,norm_divergence,0.85,0.7,0.55,1.0,0.9,0.98,10,3,0.08\n"
                        "m1,wanda,50%,builtin:books,norm_divergence,0.9,0.8,0.6,1.0,0.9,0.98,10,3,0.05\n"
                        "m2,wanda,50%,builtin:books,norm_divergence,0.85,0.7,0.55,1.0,0.9,0.98,10,3,0.5\n")
    predicts = validation_note("norm_divergence", "wanda", "50%", "builtin:news", "m1", table=ceilings)
    assert predicts.predicts and predicts.text.endswith("Verdict: predicts.")
    costly = validation_note("norm_divergence", "wanda", "50%", "builtin:books", "m1", table=ceilings)
    assert costly.verdict == "weak"  # as well ranked, but at half the cost of pruning with every candidate
    assert validation_note("norm_divergence", "wanda", "50%", "builtin:code", table=ceilings).verdict == "does not predict"
    low = validation_note("norm_divergence", "wanda", "50%", "builtin:code", "m1", table=ceilings).text
    assert "m1: Spearman 0.20 [-0.50, 0.90], Kendall 0.10, 10 candidates, seed-noise reference 0.40" in low
    assert "pruned alike within seed noise" in low
    mixed = validation_note("norm_divergence", "wanda", "60%", "builtin:code", "m1", table=ceilings).text
    assert "seed-noise reference 0.96" in mixed and "within seed noise" not in mixed  # one model's ranking repeats
    assert "seed-noise reference" not in note  # a table from before the ceiling: nothing made up
    # the committed table covers the fixed grid's settings on the bundled models
    committed = validation_note("norm_divergence", "wanda", "50%", "builtin:wiki", "smollm2-135m", table=VALIDATION_TABLE).text
    assert "Validated (wanda 50%, target builtin:wiki" in committed and "smollm2-135m: Spearman" in committed
    assert "over seeds and candidates" in committed and committed.startswith("In the validation norm_divergence ")


def test_the_best_validated_proxy_is_the_one_that_agreed_best_for_the_case_or_its_method_and_setting(tmp_path):
    from calib_core.studies.advisor import DEFAULT_PROXY, best_validated_proxy

    table = tmp_path / "validation.csv"
    table.write_text("model,method,setting,target,proxy,spearman\n"
                     "m1,wanda,50%,builtin:code,norm_divergence,0.9\n"
                     "m2,wanda,50%,builtin:code,norm_divergence,0.1\n"
                     "m1,wanda,50%,builtin:code,ngram_overlap,0.6\n"
                     "m2,wanda,50%,builtin:code,ngram_overlap,0.6\n"
                     "m1,wanda,50%,builtin:news,norm_divergence,0.9\n"
                     "m1,wanda,50%,builtin:news,min_k_pp,0.5\n")
    proxy, why = best_validated_proxy("wanda", "50%", "builtin:code", table)
    assert proxy == "ngram_overlap" and "for wanda 50% with target builtin:code (mean Spearman 0.60)" in why
    # a target not validated: the best over the validated targets with this method and setting
    proxy, why = best_validated_proxy("wanda", "50%", "my/own.txt", table)
    assert proxy == "norm_divergence" and "over the validated targets (mean Spearman 0.63)" in why
    proxy, why = best_validated_proxy("sparsegpt", "50%", "builtin:code", table)
    assert proxy == DEFAULT_PROXY and "no proxy was validated for sparsegpt 50%" in why
    assert best_validated_proxy("wanda", "50%", "builtin:code", tmp_path / "absent.csv")[0] == DEFAULT_PROXY


def test_advise_refuses_bad_cases_before_loading_a_model(capsys):
    from calib_core.cli import main as cli_main

    base = ["advise", "--model", "no/such-model", "--target", "builtin:code"]
    for extra, said in [(["--candidates", "builtin:wiki"], "two or more candidates"),
                        (["--candidates", "builtin:wiki", "builtin:wikii"], "No builtin corpus 'wikii'"),
                        (["--candidates", "builtin:wiki", "builtin:code@best"], "unknown strategy 'best'"),
                        (["--candidates", "builtin:wiki", "builtin:code", "--method", "magnitude"],
                         "predicts masks of wanda, sparsegpt, ria, owl")]:
        assert cli_main(base + extra) == 2, extra
        assert said in capsys.readouterr().err, extra


def test_the_proxy_table_has_every_proxy_and_a_ranking_follows_each_proxys_direction(tmp_path):
    from calib_core.models import load_model
    from calib_core.studies.advisor import PROXIES, AdviceSettings, Candidate, proxy_table, ranking
    from tests.tiny import save_tiny_folder

    loaded = load_model(str(save_tiny_folder(tmp_path / "tiny")), dtype="float32")
    candidates = [Candidate.parse(c) for c in ("builtin:wiki", "builtin:code", "builtin:books@unique-tokens")]
    table = proxy_table(loaded, candidates, "builtin:code", AdviceSettings(nsamples=2, seqlen=16, target_windows=2))
    assert list(table["candidate"]) == ["builtin:wiki", "builtin:code", "builtin:books by unique-tokens"]
    assert table["predicted_jaccard"].between(0, 1).all() and (table["norm_divergence"] > 0).all()
    assert table["ngram_overlap"].between(0, 1).all() and (table["calib_ppl"] > 1).all()
    assert (table["seconds"] > 0).all() and table.attrs["setting"] == "50%"
    for name, proxy in PROXIES.items():
        ordered = list(ranking(table, name)[name])
        assert ordered == sorted(ordered, reverse=proxy.higher_is_better), name


def test_the_advisor_page_ranks_warns_when_unvalidated_and_verifies_the_top(tmp_path):
    from streamlit.testing.v1 import AppTest

    from calib_core.jobs import manager
    from tests.test_app import APP, _wait
    from tests.tiny import save_tiny_folder

    sets.save_set("written", [{"text": f"the model wrote this, number {i}, at some length. " * 6} for i in range(6)],
                  {"kind": sets.SELF_GENERATED})
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["model_spec"] = str(save_tiny_folder(tmp_path / "tiny"))
    app.session_state["model_options"] = {"dtype": "float32", "quantization": None, "trust_remote_code": False}
    app.run()
    app.switch_page("app_pages/advisor.py").run()
    assert not app.exception, app.exception
    next(m for m in app.multiselect if m.label == "Candidates").set_value(
        ["builtin:wiki", "builtin:code", "set:written"]).run()
    next(n for n in app.number_input if n.label == "nsamples").set_value(2).run()
    next(n for n in app.number_input if n.label == "seqlen").set_value(16).run()
    next(s for s in app.selectbox if s.label == "Setting").set_value("0.7").run()  # outside the validated grid
    next(b for b in app.button if b.label == "Rank the candidates").click().run()
    job = _wait(manager().get(app.session_state["advise_job"]), 300)
    assert job.status == "finished", job.error
    app.run()
    assert not app.exception, app.exception
    ranked = app.dataframe[0].value
    assert list(ranked["rank"]) == [1, 2, 3]
    assert set(ranked["candidate"]) == {"builtin:wiki", "builtin:code", "set:written"}
    assert any("is not validated for wanda 70% with target builtin:code" in w.value for w in app.warning)
    assert any(w.value.startswith("set:written: text the model wrote itself.") for w in app.warning)
    assert any(c.value.startswith("Ranked by predicted_jaccard: no proxy was validated") for c in app.caption)
    assert any(c.value.startswith("No time estimate yet") for c in app.caption)  # nothing pruned here yet
    next(b for b in app.button if b.label.startswith("Prune with the top")).click().run()
    checked = _wait(manager().get(app.session_state["verify_job"]), 300)
    assert checked.status == "finished", checked.error
    app.run()
    assert not app.exception, app.exception
    verified = app.dataframe[-1].value
    assert list(verified["rank"]) == [1, 2] and (verified["ppl builtin:code"] > 1).all()


def test_the_validation_reuses_the_tournaments_points():
    from calib_core.studies.advisor_validation import ValidationSettings
    from calib_core.studies.tournament import ROUND_ONE, TournamentSettings

    validation = ValidationSettings().tournament
    for model in validation.models:
        tournament = {p.key for p in TournamentSettings(**{**ROUND_ONE, "seeds": 3}).points(model)}
        assert tournament <= {p.key for p in validation.points(model)}  # every such run is reused
        assert len(validation.points(model)) == 10 * 3 * 3 * 3  # 10 candidates, 3 methods, 3 settings, 3 seeds


def test_the_validation_measures_rank_agreement_between_proxies_and_pruning(tmp_path):
    from scipy import stats

    from calib_core.runs import RunStore
    from calib_core.studies.advisor import ACROSS_SOURCES, ALL, PROXIES
    from calib_core.studies.advisor_validation import ValidationSettings, validate
    from calib_core.studies.tournament import TournamentSettings, tournament_frame
    from calib_core.studies.validation_measures import PER_PROXY
    from tests.tiny import save_tiny_folder

    folder = str(save_tiny_folder(tmp_path / "tiny"))
    tournament = TournamentSettings(models=[folder], strategies=["random", "unique-tokens"], methods=["wanda"],
                                    settings=[0.5], seeds=2, early_seeds=2, nsamples=2, seqlen=16,
                                    eval=["builtin:wiki", "builtin:code"], eval_windows=1, cloze_items=2,
                                    extra_sources=["builtin:code"], name="v")
    settings = ValidationSettings(tournament, targets=["builtin:wiki", "builtin:code", "cloze"], target_windows=2,
                                  bootstrap=50)
    store = RunStore(tmp_path / "runs.sqlite")
    events = []
    found, verdicts, costs = validate(settings, store, tmp_path / "proxies.csv", tmp_path / "table.csv",
                                      on_run_event=events.append)
    assert any(getattr(e, "message", "").startswith("point 1/") for e in events)  # the runs report progress
    assert set(found["target"]) == {"builtin:wiki", "builtin:code", "cloze"}
    everything = found[found["scope"] == ALL]
    assert (everything["candidates"] == 4).all() and (found["seeds"] == 2).all()  # random, unique-tokens, mix, code
    # across sources: the random draws of wiki and code and the mix; the strategies on wiki are two (too few to rank)
    assert set(found["scope"]) == {ALL, ACROSS_SOURCES} and (found[found["scope"] == ACROSS_SOURCES]["candidates"] == 3).all()
    both = found.dropna(subset=["spearman_low_both"])  # three sets resampled rarely leave three distinct ones
    assert len(both) and (both["spearman_low_both"] <= both["spearman_high_both"]).all()
    assert found["spearman"].dropna().between(-1, 1).all()
    assert found["noise_ceiling"].dropna().between(0, 1).all() and found["seed_agreement"].dropna().between(-1, 1).all()
    # each proxy's cost, timed apart on this machine, against runs timed on this machine
    mine = costs[costs["model"] == folder]
    assert set(mine["proxy"]) == set(PROXIES) and (mine["share"] > 0).all() and set(mine["basis"]) == {PER_PROXY}
    # one case against ranks computed by hand
    measured = tournament_frame(tournament, store)
    proxies = pd.read_csv(tmp_path / "proxies.csv", keep_default_na=False)
    assert (proxies["proxy_seconds"] > 0).all() and (proxies["proxy_seconds"] <= proxies["seconds"]).all()
    needs_target = proxies["proxy"].map(lambda name: PROXIES[name].needs_target)
    assert (proxies[needs_target]["target_seconds"] > 0).all() and (proxies[~needs_target]["target_seconds"] == 0).all()
    case = proxies[(proxies["target"] == "builtin:code") & (proxies["proxy"] == "norm_divergence")]
    predicted = -case.groupby("entry")["value"].mean()  # lower divergence predicts better
    truth = -measured.groupby("entry")["ppl builtin:code"].mean()  # lower perplexity is better
    entries = sorted(truth.index)
    expected = stats.pearsonr(predicted[entries].rank(), truth[entries].rank()).statistic
    row = everything[(everything["target"] == "builtin:code") & (everything["proxy"] == "norm_divergence")].iloc[0]
    assert row["spearman"] == pytest.approx(expected)
    assert set(verdicts["verdict"]) <= {"predicts", "weak", "does not predict"}
    again, _, _ = validate(settings, store, tmp_path / "proxies.csv", tmp_path / "table.csv",
                           runs_csv=tmp_path / "carried.csv")  # resumes: nothing new
    assert len(pd.read_csv(tmp_path / "proxies.csv")) == len(proxies)
    # Another machine (an empty run store) carries the runs over from that CSV and runs none of them again.
    carried = pd.read_csv(tmp_path / "carried.csv")
    assert sorted(carried["point_key"]) == sorted(measured["point_key"])
    settings.tournament.previous = str(tmp_path / "carried.csv")
    elsewhere = RunStore(tmp_path / "elsewhere.sqlite")
    there, _, _ = validate(settings, elsewhere, tmp_path / "proxies.csv", tmp_path / "table.csv")
    assert not elsewhere.finished_points(tournament.name)
    pd.testing.assert_frame_equal(there.reset_index(drop=True), again.reset_index(drop=True))


def test_validate_advisor_cli_reads_committed_style_csvs_without_loading_a_model(tmp_path, monkeypatch):
    """--no-runs on a runs CSV and a proxies CSV (as committed, from another machine): the rank agreement, the
    per-case table advise reads, and a Results section that replaces the old one under the fixed protocol."""
    from calib_core import models
    from calib_core.cli import main as cli_main
    from calib_core.experiments.stats import setting_label
    from calib_core.studies import advisor
    from calib_core.studies.advisor import PROXIES
    from calib_core.studies.advisor_validation import MASK_PROXY, ValidationSettings
    from calib_core.studies.tournament import entry_of

    def no_model(*args, **kwargs):
        raise AssertionError("validate-advisor --no-runs loaded a model although every proxy was known")

    monkeypatch.setattr(models, "load_model", no_model)
    tournament = ValidationSettings().tournament
    tournament.models, tournament.dtype = ["smollm2-135m"], "float32"
    order = ["least-ppl", "random", "unique-tokens"]  # best to worst on wiki, by construction
    runs, proxies = [], []
    for point in tournament.points("smollm2-135m"):
        entry = entry_of(point.calibration, point.strategy, tournament.source)
        setting = setting_label(point.config.as_dict())
        if entry not in order or point.config.method != "wanda" or setting != "50%":
            continue
        rank = order.index(entry)
        runs.append({"model": "smollm2-135m", "method": "wanda", "setting": setting, "entry": entry,
                     "seed": point.seed, "ppl builtin:wiki": 20.0 + rank + 0.1 * point.seed,
                     "point_key": point.key, "run_seconds": 120.0})
        for name in PROXIES:  # every proxy ranks as pruning does: its value moves with the rank, its way
            value = (1.0 + rank) * (-1 if PROXIES[name].higher_is_better else 1)
            method, mask_setting = ("wanda", "50%") if name == MASK_PROXY else ("", "")
            proxies.append({"model": "smollm2-135m", "entry": entry, "seed": point.seed, "target": "builtin:wiki",
                            "proxy": name, "method": method, "setting": mask_setting, "value": value,
                            "seconds": 10.0, "selection_seconds": 4.0})
    assert len(runs) == 9  # three entries x three seeds
    pd.DataFrame(runs).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame(proxies).to_csv(tmp_path / "proxies.csv", index=False)
    report = tmp_path / "advisor.md"
    report.write_text("# Protocol\n\nFixed text.\n\n## Results\n\nold numbers\n", encoding="utf-8")
    table = tmp_path / "table.csv"
    monkeypatch.setattr(advisor, "VALIDATION_TABLE", table)
    assert cli_main(["validate-advisor", "--no-runs", "--models", "smollm2-135m", "--previous", str(tmp_path / "runs.csv"),
                     "--proxies", str(tmp_path / "proxies.csv"), "--report", str(report),
                     "--runs-out", str(tmp_path / "carried.csv")]) == 0
    assert sorted(pd.read_csv(tmp_path / "carried.csv")["point_key"]) == sorted(r["point_key"] for r in runs)
    scoped = pd.read_csv(table)
    # the three entries are all strategies on wiki: that scope ranks them too, alike; none is a draw from a source
    assert sorted(set(scoped["scope"])) == sorted({advisor.ALL, advisor.ONE_SOURCE})
    found = scoped[scoped["scope"] == advisor.ALL]
    assert (scoped[scoped["scope"] == advisor.ONE_SOURCE]["spearman"] == found["spearman"].to_numpy()).all()
    assert set(found["proxy"]) == set(PROXIES) and list(found["spearman"]) == pytest.approx([1.0] * len(PROXIES))
    assert (found["candidates"] == 3).all() and (found["seeds"] == 3).all()
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Protocol\n\nFixed text.\n\n## Results") and "old numbers" not in text
    assert "from 9 of the protocol's" in text
    # The proxies' own cost, all at once (these rows have no per-proxy time): (10 - 4 s of making the windows)
    # over the 120 s median run.
    assert "Cost basis: every proxy at once (an upper bound). Median runs: smollm2-135m: wanda 120 s." in text
    assert "| predicted_jaccard |                 5.0% |" in text
    assert scoped["cost_share"].tolist() == pytest.approx([0.05] * len(scoped))  # what advise judges by
    # every seed ranks the entries alike: the ceiling is 1 and rules out no case
    assert found["noise_ceiling"].tolist() == pytest.approx([1.0] * len(PROXIES))
    assert "In 0 of 1 cases the measured ranking repeats so little" in text
    assert "best proxy (mean Spearman) against the mean seed-noise reference of its cases: builtin:wiki: " in text
    # Every resample ranks alike (rho 1, interval [1, 1]) at 5% of the cost: the goal is met for every proxy.
    assert "is **met** for: predicted_jaccard (wanda 50%)" in text and "norm_divergence on builtin:wiki (wanda 50%)" in text


def test_each_proxys_cost_share_counts_its_own_seconds_and_the_target_against_the_methods_runs_on_the_same_cpu():
    from calib_core.studies.validation_measures import (
        ALL_AT_ONCE,
        NO_RUN_TIMES,
        OTHER_MACHINES,
        PER_PROXY,
        WITH_SELECTION,
        cost_shares,
    )

    # model a: two candidates, each proxy timed apart on cpu X (the mask proxy per method)
    timed = pd.DataFrame({"model": "a", "entry": ["x", "x", "x", "y", "y", "y"], "seed": 0,
                          "proxy": ["min_k_pp", "norm_divergence", "predicted_jaccard"] * 2,
                          "method": ["", "", "wanda"] * 2, "proxy_seconds": [1.0, 2.0, 5.0, 3.0, 4.0, 7.0],
                          "target_seconds": [0.0, 1.0, 2.0] * 2, "seconds": 9.0, "selection_seconds": 1.0, "cpu": "X"})
    # wanda's runs on X: median 30 s (and a 500 s one on Y); sparsegpt's on X: 60 s
    runs = pd.DataFrame({"model": "a", "method": ["wanda"] * 4 + ["sparsegpt"],
                         "run_seconds": [20.0, 30.0, 100.0, 500.0, 60.0], "cpu": ["X", "X", "X", "Y", "X"]})
    costs = cost_shares(timed, runs).set_index(["method", "proxy"])
    assert costs.loc[("wanda", "min_k_pp"), "share"] == pytest.approx(2.0 / 30.0)  # target-free: the candidates'
    assert costs.loc[("wanda", "norm_divergence"), "share"] == pytest.approx((3.0 + 1.0 / 2) / 30.0)  # + the target
    assert costs.loc[("sparsegpt", "norm_divergence"), "share"] == pytest.approx((3.0 + 1.0 / 2) / 60.0)
    assert costs.loc[("wanda", "predicted_jaccard"), "share"] == pytest.approx((6.0 + 2.0 / 2) / 30.0)
    assert costs.loc[("sparsegpt", "predicted_jaccard"), "share"] != costs.loc[("sparsegpt", "predicted_jaccard"), "share"]
    assert set(costs["basis"]) == {PER_PROXY}
    elsewhere = cost_shares(timed, runs.assign(cpu="Z")).set_index(["method", "proxy"])  # none on X: every run, said
    assert elsewhere.loc[("wanda", "min_k_pp"), "share"] == pytest.approx(2.0 / 65.0)
    assert set(elsewhere["basis"]) == {OTHER_MACHINES}
    # a method with no run on the proxies' CPU is measured against its runs elsewhere, said for that method alone
    mixed = cost_shares(timed, runs.assign(cpu=["X"] * 4 + ["Z"])).drop_duplicates("method").set_index("method")
    assert mixed.loc["wanda", "basis"] == PER_PROXY and mixed.loc["sparsegpt", "basis"] == OTHER_MACHINES
    # rows from before per-proxy times: every proxy costs what all of a candidate's did, less its windows if timed
    old = pd.DataFrame({"model": ["b", "b", "c"], "entry": "x", "seed": 0, "proxy": "calib_ppl", "seconds": [3.0, 3.0, 5.0],
                        "selection_seconds": [1.0, 1.0, None], "proxy_seconds": None, "cpu": ""})
    old_runs = pd.DataFrame({"model": ["b", "b", "c"], "method": "wanda", "run_seconds": [10.0, 30.0, None]})
    both = cost_shares(old, old_runs)
    b, c = both[both["model"] == "b"], both[both["model"] == "c"]
    assert b["share"].tolist() == pytest.approx([2.0 / 20.0] * len(b)) and set(b["basis"]) == {ALL_AT_ONCE}
    assert c["share"].isna().all() and set(c["basis"]) == {NO_RUN_TIMES}  # no run time recorded: not measured
    unselected = cost_shares(old.drop(columns="selection_seconds"), old_runs)
    assert set(unselected[unselected["model"] == "b"]["basis"]) == {WITH_SELECTION}
    assert unselected[unselected["model"] == "b"]["share"].tolist()[0] == pytest.approx(3.0 / 20.0)


def test_the_noise_ceiling_follows_how_well_seeds_rank_the_entries_alike():
    from scipy import stats

    from calib_core.studies.validation_measures import seed_reliability

    same = pd.DataFrame({0: [1.0, 2.0, 3.0, 4.0], 1: [1.1, 2.1, 3.1, 4.1], 2: [0.9, 1.9, 2.9, 3.9]})
    assert seed_reliability(same) == pytest.approx((1.0, 1.0))
    reversed_ = pd.DataFrame({0: [1.0, 2.0, 3.0, 4.0], 1: [4.0, 3.0, 2.0, 1.0]})
    assert seed_reliability(reversed_) == pytest.approx((-1.0, 0.0))  # no agreement: nothing to predict
    mixed = pd.DataFrame({0: [1.0, 2.0, 3.0, 4.0, 5.0], 1: [2.0, 1.0, 3.0, 5.0, 4.0], 2: [1.0, 3.0, 2.0, 4.0, 5.0]})
    pairs = [stats.spearmanr(mixed[a], mixed[b]).statistic for a, b in [(0, 1), (0, 2), (1, 2)]]
    r1 = sum(pairs) / 3
    assert seed_reliability(mixed) == pytest.approx((r1, (3 * r1 / (1 + 2 * r1)) ** 0.5))
    one = seed_reliability(same[[0]])
    assert one[0] != one[0] and one[1] != one[1]  # one seed: unknown




def _case_rows(proxy, target, spearman, models=("m1", "m2"), cost=0.05):
    return [{"model": m, "method": "wanda", "setting": "50%", "target": target, "proxy": proxy, "spearman": spearman,
             "spearman_low": spearman - 0.2, "seed_agreement": 0.7, "noise_ceiling": 0.9, "cost_share": cost}
            for m in models]


def test_the_results_section_states_the_goal_the_single_target_cells_and_how_much_was_run(tmp_path):
    from calib_core.studies.advisor_validation import ValidationSettings, verdicts
    from calib_core.studies.advisor_validation_report import RESULTS_HEADING, write_results
    from calib_core.studies.validation_measures import OTHER_MACHINES, PER_PROXY

    report = tmp_path / "advisor.md"
    report.write_text("# Protocol\n\nFixed before any result.\n\n## Results\n\nstale numbers\n", encoding="utf-8")
    costs = pd.DataFrame({"model": ["m1", "m2"], "method": "wanda", "proxy": "p1", "share": 0.05,
                          "run_seconds": [20.0, 30.0], "basis": PER_PROXY})
    settings = ValidationSettings()
    planned = sum(len(settings.tournament.points(m)) for m in settings.tournament.models)
    # p1 predicts both targets on both models; p2 predicts target a on one model only and fails b
    found = pd.DataFrame(_case_rows("p1", "a", 0.9) + _case_rows("p1", "b", 0.85)
                         + _case_rows("p2", "a", 0.95, models=("m1",)) + _case_rows("p2", "b", 0.1))
    write_results(report, found, verdicts(found), costs, settings, planned, "validate-advisor")
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Protocol\n\nFixed before any result.\n") and "stale numbers" not in text
    assert text.count(RESULTS_HEADING) == 1 and f"from {planned} of the protocol's {planned} measured points (every one)" in text
    assert "is **met** for: p1 (wanda 50%)" in text
    assert "p2 on a (wanda 50%; 1 of 2 models measured)" in text and "p2 on b" not in text.split("single targets")[1]
    assert f"Cost basis: {PER_PROXY}. Median runs: m1: wanda 20 s; m2: wanda 30 s." in text

    # p1 fails target b: no proxy predicts every target, and a partial run says what is missing
    found.loc[(found["proxy"] == "p1") & (found["target"] == "b"), "spearman"] = 0.2
    mixed = costs.assign(basis=[PER_PROXY, OTHER_MACHINES])  # then each method's basis stands beside it
    write_results(report, found, verdicts(found), mixed, settings, planned - 90, "validate-advisor")
    text = report.read_text(encoding="utf-8")
    assert "is **not met**: no proxy predicts every target" in text and "the others not run yet" in text
    assert (f"Median runs, with each method's cost basis: m1: wanda 20 s ({PER_PROXY}); "
            f"m2: wanda 30 s ({OTHER_MACHINES}).") in text


def test_rows_of_an_earlier_proxy_revision_are_not_quoted_for_todays_proxy(tmp_path):
    from calib_core.studies.advisor import (
        UNVALIDATED,
        best_validated_proxy,
        current_rows,
        proxy_revision,
        validation_note,
    )

    assert proxy_revision("sparsegpt", "predicted_jaccard") == 1 and proxy_revision("wanda", "predicted_jaccard") == 0
    header = "model,method,setting,target,proxy,spearman,kendall,spearman_low,spearman_high,candidates,cost_share"
    rows = ["m1,sparsegpt,50%,builtin:news,predicted_jaccard,0.95,0.9,0.9,1.0,10,0.05",  # revision 0: the old proxy
            "m1,sparsegpt,50%,builtin:news,ngram_overlap,0.5,0.4,0.2,0.7,10,0.01",
            "m1,wanda,50%,builtin:news,predicted_jaccard,0.6,0.5,0.3,0.8,10,0.05"]
    old = tmp_path / "old.csv"
    old.write_text("\n".join([header, *rows]) + "\n")
    note = validation_note("predicted_jaccard", "sparsegpt", "50%", "builtin:news", table=old)
    assert note.verdict == UNVALIDATED and "earlier computation" in note.text and not note.predicts
    assert validation_note("predicted_jaccard", "wanda", "50%", "builtin:news", table=old).verdict != UNVALIDATED
    assert best_validated_proxy("sparsegpt", "50%", "builtin:news", old)[0] == "ngram_overlap"  # not the stale 0.95
    assert len(current_rows(pd.read_csv(old))) == 2
    # the same rows marked as today's revision are quoted
    new = tmp_path / "new.csv"
    new.write_text("\n".join([header + ",proxy_revision", rows[0] + ",1", rows[1] + ",0", rows[2] + ",0"]) + "\n")
    assert validation_note("predicted_jaccard", "sparsegpt", "50%", "builtin:news", table=new).verdict == "predicts"
    assert best_validated_proxy("sparsegpt", "50%", "builtin:news", new)[0] == "predicted_jaccard"

def test_the_resampled_spearman_is_scipys_on_each_resample():
    from scipy import stats

    from calib_core.studies.validation_measures import resampled_spearman

    rng = np.random.default_rng(3)
    predicted, measured = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    seeds, rows = rng.integers(0, 3, (40, 3)), rng.integers(0, 6, (40, 6))
    got = resampled_spearman(predicted, measured, seeds, rows)
    for b in range(40):
        if len(set(rows[b])) < 3:
            assert np.isnan(got[b])  # fewer than three distinct sets rank nothing
            continue
        a = predicted[:, seeds[b]].mean(axis=1)[rows[b]]
        m = measured[:, seeds[b]].mean(axis=1)[rows[b]]
        assert got[b] == pytest.approx(stats.spearmanr(a, m).statistic)
    # resampling seeds only, every candidate once: the seeds' bootstrap of the protocol
    assert resampled_spearman(predicted, predicted, seeds, np.tile(np.arange(6), (40, 1))) == pytest.approx(np.ones(40))


def test_advise_says_in_plain_words_when_a_proxy_only_tells_domains_apart(tmp_path):
    from calib_core.studies.advisor import ACROSS_SOURCES, ALL, ONE_SOURCE, plain_words, validation_note

    header = ("model,method,setting,target,proxy,scope,spearman,kendall,spearman_low,spearman_high,"
              "spearman_low_both,spearman_high_both,candidates,seeds,cost_share\n")
    rows = []
    for model, across, within in (("m1", 0.9, 0.1), ("m2", 0.8, 0.3)):
        rows += [f"{model},wanda,50%,builtin:code,norm_divergence,{ALL},0.7,0.5,0.6,0.8,0.2,0.9,10,3,0.05",
                 f"{model},wanda,50%,builtin:code,norm_divergence,{ACROSS_SOURCES},{across},0.5,0.6,0.9,0.1,1.0,5,3,0.05",
                 f"{model},wanda,50%,builtin:code,norm_divergence,{ONE_SOURCE},{within},0.1,-0.5,0.6,-0.9,0.9,6,3,0.05"]
    table = tmp_path / "scoped.csv"
    table.write_text(header + "\n".join(rows) + "\n")
    note = validation_note("norm_divergence", "wanda", "50%", "builtin:code", "m1", table=table)
    assert note.verdict == "weak"  # the verdict is the protocol's: over all candidates (mean 0.7)
    assert note.text.startswith("In the validation norm_divergence ranks sets from different sources")
    assert "(0.20)" in note.text and "which domain to calibrate on, not which set within a domain" in note.text
    assert "--verify K" in note.text and "[0.60, 0.80] over seeds, [0.20, 0.90] over seeds and candidates" in note.text
    assert "ranking by it costs 5% of pruning with every candidate. Verdict: weak" in note.text
    frame = pd.read_csv(table)
    within_too = frame.assign(spearman=frame["spearman"].where(frame["scope"] != ONE_SOURCE, 0.7))
    assert "not which set within a domain" not in plain_words(within_too, "norm_divergence")
    assert plain_words(frame.drop(columns="scope"), "norm_divergence") == ""  # a table from before scopes


def test_a_new_method_with_a_score_hook_is_predicted_by_the_advisor_and_shown_inside(monkeypatch):
    """Adding a method is one registry entry: the advisor predicts its masks through its own prune hook, and the
    Inside a layer page shows its score, with no edit outside prune/."""
    from calib_core.metrics import inside
    from calib_core.metrics.proxies import predictable
    from calib_core.prune import methods
    from calib_core.prune.masks import mask_from_scores

    def toy_prune(weight, stats, sparsity, pattern, config):
        scores = weight.abs().float() * stats.feature_norm().square().unsqueeze(0)
        return mask_from_scores(scores, sparsity, pattern, per_row=True), None

    def toy_score(magnitude, weight, channel, config):
        return magnitude * channel("norm")[None, :] ** 2, "|W| x ||X_j||^2 (toy)"

    toy = methods.Method("toy", "a throwaway", "toy", frozenset({methods.NORMS}), prune=toy_prune, score=toy_score)
    monkeypatch.setitem(methods.METHODS, "toy", toy)
    assert "toy" in predictable() and "dsnot" not in predictable() and "magnitude" not in predictable()
    model = tiny_model()
    stats = dense_channel_norms(model, random_ids(4, 16, seed=2))
    masks = predicted_masks(model, stats, PruneConfig(method="toy", sparsity=0.5))
    for (block, name), kept in masks.items():
        weight = prunable_modules(decoder_blocks(model)[block])[name].weight
        scores = weight.abs().float() * stats.norms[(block, name)].square().unsqueeze(0)
        assert torch.equal(kept, ~mask_from_scores(scores, 0.5, parse_pattern("unstructured"), per_row=True))
    assert not torch.equal(masks[(0, "mlp.up_proj")], predicted_masks(model, stats, PruneConfig(method="wanda"))[(0, "mlp.up_proj")])

    class Run:
        record = {"config": {"method": "toy"}}

        @staticmethod
        def channel(block, module, kind="norm"):
            assert kind == "norm"
            return np.array([1.0, 2.0, 3.0])

    weight = np.array([[1.0, -1.0, 2.0]])
    score, formula = inside.method_score(Run(), 0, "mlp.up_proj", weight)
    assert formula == "|W| x ||X_j||^2 (toy)" and score.tolist() == [[1.0, 4.0, 18.0]]
