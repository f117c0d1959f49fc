"""Perplexity protocols (heldout vs Wanda/SparseGPT's WikiText-2 stream) and the CLI flags that pick them."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from calib_core.cli import main
from calib_core.errors import ConfigError
from calib_core.experiments.sweeps import SweepGrid
from calib_core.metrics.perplexity import eval_token_stream, perplexity
from tests.tiny import char_tokenizer, save_tiny_folder, tiny_model

# WikiText-2 style rows: headings, paragraphs and the empty rows between them
ROWS = ["", " = Valkyria Chronicles = ", "", " Senjo no Valkyria is a tactical game . ", "", "",
        " It was released in 2011 . ", " "]


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "wiki.jsonl"
    path.write_text("\n".join(json.dumps({"text": row}) for row in ROWS))
    return f"file:{path}"


def test_wikitext2_stream_keeps_empty_rows_and_special_tokens(rows_file):
    tok = char_tokenizer(add_bos=True)
    wikitext2 = eval_token_stream(rows_file, tok, protocol="wikitext2").tolist()
    assert wikitext2 == tok("\n\n".join(ROWS))["input_ids"]  # default special tokens: one BOS first
    assert wikitext2[0] == tok.bos_token_id and wikitext2.count(tok.bos_token_id) == 1
    heldout = eval_token_stream(rows_file, tok).tolist()
    kept = [r for r in ROWS if r.strip()]
    assert heldout == tok("\n\n".join(kept), add_special_tokens=False)["input_ids"]
    assert len(wikitext2) > len(heldout)


def test_wikitext2_from_a_hub_stream(monkeypatch):
    import datasets

    tok = char_tokenizer(add_bos=True)
    monkeypatch.setattr("calib_core.hub.hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split, streaming: iter(
        [{"text": row} for row in ROWS]))
    stream = eval_token_stream("hf:wikitext:wikitext-2-raw-v1:test", tok, protocol="wikitext2")
    assert stream.tolist() == tok("\n\n".join(ROWS))["input_ids"]


def test_every_result_names_its_protocol_and_wikitext2_is_the_mean_window_loss(rows_file):
    tok, model = char_tokenizer(add_bos=True), tiny_model("llama")
    result = perplexity(model, tok, rows_file, seqlen=16, protocol="wikitext2")
    heldout = perplexity(model, tok, rows_file, seqlen=16)
    assert result.protocol.startswith("wikitext2: ") and "empty rows" in result.protocol
    assert heldout.protocol.startswith("heldout: ")
    # Wanda's eval: exp(mean over windows of each window's mean next-token loss)
    ids = torch.tensor(tok("\n\n".join(ROWS))["input_ids"])
    windows = ids[: ids.numel() // 16 * 16].view(-1, 16)
    with torch.inference_mode():
        losses = [F.cross_entropy(model(input_ids=w[None]).logits[0, :-1], w[1:]) for w in windows]
    assert result.windows == len(windows)
    assert result.ppl == pytest.approx(math.exp(float(torch.stack(losses).mean())), rel=1e-5)
    with pytest.raises(ConfigError, match="one of heldout, wikitext2, got 'wanda'"):
        perplexity(model, tok, rows_file, seqlen=16, protocol="wanda")


def test_cli_eval_wikitext2_offline_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("calib_core.hub.hub_reachable", lambda timeout=3.0: False)
    folder = save_tiny_folder(tmp_path / "tiny")
    code = main(["eval", "--model", str(folder), "--eval", "hf:wikitext:wikitext-2-raw-v1:test",
                 "--ppl-protocol", "wikitext2", "--seqlen", "16"])
    assert code == 2 and "cannot be reached" in capsys.readouterr().err


def test_cli_prune_records_sampling_and_protocol(tmp_path, rows_file):
    folder = save_tiny_folder(tmp_path / "tiny")
    report = tmp_path / "report.json"
    code = main(["prune", "--model", str(folder), "--calib", "builtin:wiki", "--nsamples", "2", "--seqlen", "16",
                 "--mode", "concat", "--concat-separator", " ", "--eval", rows_file, "--ppl-protocol", "wikitext2",
                 "--report", str(report)])
    assert code == 0
    record = json.loads(report.read_text())
    assert record["calibration"]["mode"] == "concat" and record["calibration"]["concat_separator"] == " "
    assert record["perplexity"][0]["protocol"].startswith("wikitext2: ")
    assert record["job"]["ppl_protocol"] == "wikitext2" and record["job"]["concat_separator"] == " "


def test_cli_separator_takes_backslash_escapes():
    from calib_core.cli import build_parser

    args = build_parser().parse_args(["prune", "--concat-separator", "\\n\\n"])
    assert args.concat_separator == "\n\n" and build_parser().parse_args(["prune"]).concat_separator == "\n\n"


def test_sweep_grid_options_keep_old_point_keys_and_are_validated():
    grid = SweepGrid.from_dict({"name": "g"})
    assert set(grid.context()) == {"model", "dtype", "seqlen", "mode", "eval", "eval_windows"}  # keys as before
    faithful = SweepGrid.from_dict({"name": "g", "mode": "concat", "concat_separator": " ",
                                    "ppl_protocol": "wikitext2"})
    assert faithful.context()["concat_separator"] == " " and faithful.context()["ppl_protocol"] == "wikitext2"
    job = faithful.spec(faithful.points()[0])
    assert job.concat_separator == " " and job.evaluation.protocol == "wikitext2"
    with pytest.raises(ConfigError, match="protocol"):
        SweepGrid.from_dict({"name": "g", "ppl_protocol": "ppl"})


def test_point_keys_of_earlier_sweeps_survive_new_registry_options():
    """Keys as afb559b computed them (before options came from the registry and RIA added its own):
    a resumed sweep or reproduction reuses its finished points."""
    def key(method):
        return SweepGrid.from_dict(dict(name="k", methods=[method], sparsities=["2:4"])).points()[0].key

    assert key("wanda") == "e1d2b043c5661ec3"
    assert key({"method": "owl", "base": "sparsegpt"}) == "e49529e93396cf3e"
