"""Text sources, files with problems, and seeded sampling."""

import json

import numpy as np
import pytest
import torch

from calib_core import assets
from calib_core.data import sets
from calib_core.data.documents import load_documents, read_text_file
from calib_core.data.sources import DOCUMENT_PAD_ID, build_calibration, draw_windows
from calib_core.errors import SourceError
from tests.tiny import CharTokenizer, char_tokenizer

TOK = CharTokenizer()


@pytest.mark.parametrize("name", assets.BUILTIN_CORPORA)
def test_builtin_corpora_split_is_disjoint_and_stable(name):
    docs = assets.builtin_documents(name)
    calib = [d["id"] for d in docs if d["split"] == "calib"]
    held = [d["id"] for d in docs if d["split"] == "eval"]
    assert len(held) >= 3 and len(calib) >= 4 * len(held)  # about one in ten held out
    assert not set(calib) & set(held)
    assert assets.builtin_documents(name) == docs
    texts = load_documents(f"builtin:{name}", part="eval")
    assert len(texts) == len(held)


def test_wiki_corpus_is_clean_articles():
    docs = load_documents("builtin:wiki", part="all")
    assert len(docs) > 90
    assert not any(d.lower().startswith("#redirect") for d in docs)
    assert not any("'''" in d for d in docs)


@pytest.mark.parametrize("mode", ["document", "concat"])
def test_sampling_is_reproducible_and_seed_dependent(mode):
    a = build_calibration("builtin:news", TOK, nsamples=6, seqlen=64, seed=5, mode=mode)
    b = build_calibration("builtin:news", TOK, nsamples=6, seqlen=64, seed=5, mode=mode)
    c = build_calibration("builtin:news", TOK, nsamples=6, seqlen=64, seed=6, mode=mode)
    assert a.input_ids.shape == (6, 64)
    assert torch.equal(a.input_ids, b.input_ids) and a.fingerprint == b.fingerprint
    assert not torch.equal(a.input_ids, c.input_ids) and a.fingerprint != c.fingerprint


def test_document_mode_windows_come_from_one_document():
    docs = [[1] * 10, list(range(100, 200)), [2] * 25]
    ids = draw_windows(docs, nsamples=20, seqlen=25, seed=0, mode="document").ids
    for row in ids.tolist():
        assert row == list(range(row[0], row[0] + 25))  # only the 100-token doc is long enough


def test_concat_mode_can_cross_documents_and_needs_enough_tokens():
    ids = draw_windows([[1] * 5, [2] * 5], nsamples=3, seqlen=8, seed=0, mode="concat").ids
    assert ids.shape == (3, 8)
    with pytest.raises(SourceError, match="fewer than seqlen"):
        draw_windows([[1] * 5], nsamples=1, seqlen=8, seed=0, mode="concat")


def test_too_short_documents_are_explained():
    with pytest.raises(SourceError, match="No document has more than 50 tokens"):
        draw_windows([[1] * 10, [2] * 20], nsamples=1, seqlen=50, seed=0, mode="document")


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.txt", b"", "is empty"),
        ("blank.txt", b"  \n\n ", "only whitespace"),
        ("binary.txt", b"\x00\x01\x02abc" * 10, "looks binary"),
        ("latin.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "a"}\n{oops', "line 2 is not valid JSON"),
        ("nums.csv", b"a,b\n1,2\n3,4\n", "no text column"),
        ("numbers.json", b"[1, 2, 3]", "expected a list of strings"),
        ("data.xlsx", b"whatever", "unsupported file type"),
    ],
)
def test_bad_files_get_specific_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        read_text_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_documents(f"file:{tmp_path / 'nope.txt'}")


def test_text_column_detected_or_chosen(tmp_path):
    rows = [{"id": i, "label": "x", "body": f"document number {i} " * 5} for i in range(4)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_documents(f"file:{jsonl}")[2].startswith("document number 2")
    assert load_documents(f"file:{jsonl}", text_column="label") == ["x"] * 4
    with pytest.raises(SourceError, match="no column 'missing'"):
        load_documents(f"file:{jsonl}", text_column="missing")
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "s.json").write_text(json.dumps(["one text", "two texts"]))
    for name in ("d.csv", "d.parquet", "d.json"):
        assert len(load_documents(f"file:{tmp_path / name}")) == 4
    assert load_documents(f"file:{tmp_path / 's.json'}") == ["one text", "two texts"]


def test_txt_file_builds_samples(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("It was the best of times. " * 40)
    calib = build_calibration(f"file:{path}", TOK, nsamples=3, seqlen=32, seed=1)
    assert calib.input_ids.shape == (3, 32) and calib.documents == 1


def test_saved_set_round_trip_and_source():
    sets.save_set("mine", [{"text": "alpha beta " * 30, "kept": True}, {"text": "dropped", "kept": False}],
                  {"origin": "test"})
    assert sets.list_sets() == ["mine"]
    assert load_documents("set:mine") == ["alpha beta " * 30]
    assert build_calibration("set:mine", TOK, 2, 16, 0).input_ids.shape == (2, 16)
    sets.delete_set("mine")
    with pytest.raises(SourceError, match="No saved calibration set 'mine'"):
        load_documents("set:mine")
    with pytest.raises(SourceError, match="Invalid set name"):
        sets.save_set("../evil", [{"text": "x"}])


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_token_tensor_used_exactly(tmp_path, suffix):
    ids = torch.randint(0, 90, (4, 12))
    path = tmp_path / f"ids{suffix}"
    torch.save(ids, path) if suffix == ".pt" else np.save(path, ids.numpy())
    calib = build_calibration(f"tokens:{path}", TOK, nsamples=999, seqlen=999)
    assert torch.equal(calib.input_ids, ids)


def test_token_tensor_problems(tmp_path):
    bad_shape = tmp_path / "flat.pt"
    torch.save(torch.arange(10), bad_shape)
    with pytest.raises(SourceError, match="nsamples, seqlen"):
        build_calibration(f"tokens:{bad_shape}", TOK)
    too_big = tmp_path / "big.npy"
    np.save(too_big, np.full((2, 4), 10_000))
    with pytest.raises(SourceError, match="outside the tokenizer's vocabulary"):
        build_calibration(f"tokens:{too_big}", TOK)
    floats = tmp_path / "f.npy"
    np.save(floats, np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(SourceError, match="must be integers"):
        build_calibration(f"tokens:{floats}", TOK)


@pytest.mark.parametrize("spec", ["wiki", "builtin:", "builtin:poems", "ftp:x"])
def test_bad_source_specs(spec):
    with pytest.raises(SourceError):
        load_documents(spec)


def test_hub_dataset_offline_is_explained(monkeypatch):
    monkeypatch.setattr("calib_core.hub.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SourceError, match="cannot be reached.*builtin"):
        load_documents("hf:wikitext:wikitext-2-raw-v1:test")


# ---------------------------------------------------------------- sampling modes as in the authors' code


def test_document_pad_pads_short_texts_with_zero_and_windows_long_ones():
    seqlen = 10
    padded, exact, long, too_short = [5] * 8, list(range(40, 50)), list(range(100, 130)), [9] * 7
    windows = draw_windows([padded, exact, long, too_short], nsamples=60, seqlen=seqlen, seed=0, mode="document_pad")
    kinds = set()
    for row, length in zip(windows.ids.tolist(), windows.unpadded_lengths):
        if row == padded + [DOCUMENT_PAD_ID] * 2:  # more than seqlen - 3 tokens: kept whole, padded with id 0
            kinds.add("padded")
            assert length == 8
        elif row == exact:
            kinds.add("exact")
            assert length == seqlen
        else:  # longer than seqlen: a random window, as in document mode
            assert row == list(range(row[0], row[0] + seqlen)) and 100 <= row[0] <= 119 and length == seqlen
            kinds.add("window")
    assert kinds == {"padded", "exact", "window"}  # the 7-token text (not > seqlen - 3) is never drawn


def test_document_pad_is_reproducible_and_recorded():
    tok = char_tokenizer(add_bos=True)
    texts = ["a" * 14, "b" * 15, "c" * 40, "d" * 5]  # 15, 16, 41, 6 tokens with the BOS
    sets.save_set("gen", [{"text": t} for t in texts], {"kind": "self-generated"})
    a = build_calibration("set:gen", tok, nsamples=12, seqlen=16, seed=3, mode="document_pad")
    b = build_calibration("set:gen", tok, nsamples=12, seqlen=16, seed=3, mode="document_pad")
    assert torch.equal(a.input_ids, b.input_ids) and a.fingerprint == b.fingerprint
    record = a.describe()
    assert record["mode"] == "document_pad" and record["pad_id"] == 0 and record["special_tokens"] is True
    assert record["eligible_documents"] == 3 and record["documents"] == 4 and record["concat_separator"] is None
    char = {c: tok(c, add_special_tokens=False)["input_ids"][0] for c in "abc"}
    padded, exact = [1] + [char["a"]] * 14 + [0], [1] + [char["b"]] * 15  # BOS first, as the tokenizer adds it
    windows = ([char["c"]] * 16, [1] + [char["c"]] * 15)
    rows = a.input_ids.tolist()
    assert all(row in (padded, exact, *windows) for row in rows)  # the 6-token text is never drawn
    assert record["padded_samples"] == rows.count(padded) > 0 and exact in rows
    assert a.unpadded_lengths == [15 if row == padded else 16 for row in rows]


def test_document_pad_without_long_enough_texts_says_what_to_do():
    sets.save_set("short", [{"text": "x" * n} for n in (5, 9, 12)])
    with pytest.raises(SourceError, match=r"more than seqlen - 3 = 61 tokens; none has \(3 texts, longest: 12 "
                                          r"tokens\).*max_new_tokens.*lower seqlen"):
        build_calibration("set:short", TOK, nsamples=2, seqlen=64, mode="document_pad")


def test_concat_separator_joins_the_texts_and_is_recorded():
    sets.save_set("two", [{"text": "aaaa"}, {"text": "bbbb"}])
    spaced = build_calibration("set:two", TOK, nsamples=1, seqlen=9, mode="concat", concat_separator=" ")
    assert spaced.input_ids[0].tolist() == TOK("aaaa bbbb")["input_ids"]  # the only window of 9 tokens
    assert spaced.describe()["concat_separator"] == " " and spaced.describe()["eligible_documents"] is None
    default = build_calibration("set:two", TOK, nsamples=1, seqlen=10, mode="concat")
    assert default.input_ids[0].tolist() == TOK("aaaa\n\nbbbb")["input_ids"]
    assert default.describe()["concat_separator"] == "\n\n"


def test_document_mode_records_eligible_documents():
    calib = build_calibration("builtin:news", TOK, nsamples=4, seqlen=64, seed=0, mode="document")
    docs = load_documents("builtin:news")
    assert calib.describe()["eligible_documents"] == sum(len(TOK(d)["input_ids"]) > 64 for d in docs)
    assert calib.describe()["pad_id"] is None and calib.describe()["padded_samples"] == 0


def test_bad_mode_is_named():
    with pytest.raises(SourceError, match="one of document, concat, document_pad, got 'pad'"):
        build_calibration("builtin:news", TOK, nsamples=1, seqlen=8, mode="pad")


def test_keep_empty_rows_only_when_asked(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["one", "", " ", "two"]))
    assert load_documents(f"file:{path}") == ["one", "two"]
    assert load_documents(f"file:{path}", keep_empty=True) == ["one", "", " ", "two"]


# ---------------------------------------------------------------- hub document pools (a fake stream)


class FakeHub:
    """Stands in for datasets.load_dataset(..., streaming=True): rows in order, counting how many were read."""

    def __init__(self, texts):
        self.texts, self.read = texts, 0

    def __call__(self, name, config=None, split="train", streaming=False):
        assert streaming
        return self

    def __iter__(self):
        for text in self.texts:
            self.read += 1
            yield {"id": self.read, "text": text}


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    def install(texts):
        hub = FakeHub(texts)
        monkeypatch.setattr("calib_core.hub.hub_reachable", lambda timeout=3.0: True)
        monkeypatch.setattr(datasets, "load_dataset", hub)
        return hub

    return install


def test_hub_document_pool_reads_until_ten_per_sample_qualify(fake_hub):
    # one long document in every 300 rows: 30 qualify only after 9000 rows, past the old fixed 5000
    texts = [("long document " * 10 if i % 300 == 299 else "short") for i in range(12000)]
    hub = fake_hub(texts)
    calib = build_calibration("hf:fake/corpus", TOK, nsamples=3, seqlen=100, seed=0, mode="document")
    record = calib.describe()
    assert record["eligible_documents"] == 30 and record["documents"] == 9000
    assert record["hub_scan"]["stopped"] == "enough" and record["hub_scan"]["documents_read"] == 9000
    assert hub.read < 9000 + 256 + 1  # stops within one tokenizer batch of the last document needed
    assert not record["notes"]
    again = build_calibration("hf:fake/corpus", TOK, nsamples=3, seqlen=100, seed=0, mode="document")
    assert again.fingerprint == calib.fingerprint


def test_hub_scan_cap_is_reported(fake_hub, monkeypatch):
    monkeypatch.setattr("calib_core.data.sources.HUB_SCAN_MAX_DOCUMENTS", 1000)
    fake_hub([("long document " * 10 if i % 300 == 299 else "short") for i in range(12000)])
    calib = build_calibration("hf:fake/corpus", TOK, nsamples=3, seqlen=100, seed=0, mode="document")
    record = calib.describe()
    assert record["eligible_documents"] == 3 and record["hub_scan"]["stopped"] == "scan cap"
    assert "scan cap" in record["notes"][0] and "3 of the 30 documents with more than 100 tokens" in record["notes"][0]
    monkeypatch.setattr("calib_core.data.sources.HUB_SCAN_MAX_DOCUMENTS", 200)
    with pytest.raises(SourceError, match=r"No document has more than 100 tokens \(200 documents read from "
                                          r"hf:fake/corpus, stopped at the scan cap, longest: 5 tokens\)"):
        build_calibration("hf:fake/corpus", TOK, nsamples=3, seqlen=100, seed=0, mode="document")


def test_hub_document_pad_pool_and_concat_budget(fake_hub):
    texts = ["x" * (50 + i % 40) for i in range(2000)]  # 50..89 characters = tokens
    fake_hub(texts)
    padded = build_calibration("hf:fake/gen", TOK, nsamples=2, seqlen=64, mode="document_pad")
    assert padded.describe()["eligible_documents"] == 20  # more than 61 tokens: 10 per sample
    assert padded.describe()["hub_scan"]["documents_read"] == 32  # lengths 50..61 come first and do not count
    hub = fake_hub(texts)
    joined = build_calibration("hf:fake/gen", TOK, nsamples=2, seqlen=64, mode="concat", concat_separator=" ")
    scan = joined.describe()["hub_scan"]
    read = scan["documents_read"]
    assert scan["stopped"] == "enough" and scan["found"] == 10 * 2 * 64  # the joined stream, cut at what is wanted
    # read in small pieces when little is wanted: about 2 x 2048 characters past the last one needed
    assert sum(len(t) + 1 for t in texts[: read - 1]) < 10 * 2 * 64 + 2 * 2048 + 100
    assert joined.documents == read and joined.describe()["concat_separator"] == " " and hub.read < 2000


# ---------------------------------------------------------------- malformed files, bounded reading


@pytest.mark.parametrize("content,kind", [(b"42", "int"), (b"true", "bool"), (b"null", "NoneType"), (b"3.5", "float")])
def test_json_scalars_are_refused_with_a_message(tmp_path, content, kind):
    path = tmp_path / "scalar.json"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=f"holds a single JSON {kind}.*not texts"):
        load_documents(f"file:{path}")


def test_a_json_string_is_one_document(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps("a whole text in one JSON string"))
    assert load_documents(f"file:{path}") == ["a whole text in one JSON string"]


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n{"text": three}\n')
    with pytest.raises(SourceError, match="line 4 is not valid JSON"):
        load_documents(f"file:{path}")
    path.write_text('"a string"\n{"text": "an object"}\n')
    with pytest.raises(SourceError, match="line 2: expected every line to be a string or every line an object"):
        load_documents(f"file:{path}")


def test_a_pickled_token_file_is_refused_without_advising_to_unpickle(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"input_ids": torch.ones(2, 4, dtype=torch.long), "payload": print}, handle, protocol=2)
    with pytest.raises(SourceError) as caught:
        build_calibration(f"tokens:{path}", TOK)
    message = str(caught.value)
    assert "never loaded" in message and "weights_only" not in message and "Re-running" not in message


def test_long_text_is_tokenized_in_pieces_with_the_same_ids(monkeypatch):
    from calib_core.data import tokens

    text = " ".join(f"word{i}:   value  {i % 7}\n" for i in range(3000))
    whole = TOK(text)["input_ids"]
    monkeypatch.setattr(tokens, "PIECE_CHARACTERS", 97)  # hundreds of cuts
    assert tokens.encode_stream(TOK, [text]).ids.tolist() == whole
    assert tokens.first_tokens(TOK, text, 1000) == whole[:1000]
    stopped = tokens.encode_stream(TOK, [text[:5000], text[5000:]], max_tokens=1234)
    assert stopped.ids.tolist() == whole[:1234] and not stopped.complete


def test_a_large_file_is_read_only_up_to_its_read_budget(tmp_path, monkeypatch):
    from calib_core.data import sources as data

    path = tmp_path / "big.txt"
    path.write_text("alpha beta gamma delta " * 100_000)  # 2.3 M characters = tokens for TOK, read in 1 MB chunks
    monkeypatch.setattr(data, "READ_TOKENS_FLOOR", 50_000)
    calib = build_calibration(f"file:{path}", TOK, nsamples=4, seqlen=64, seed=0, mode="document")
    scan = calib.describe()["read_scan"]
    assert scan["stopped"] == "read budget" and scan["tokens_read"] == 50_000 and scan["characters_read"] <= 1024**2
    assert "read budget of 50000 tokens" in calib.notes[0]
    small = build_calibration(f"file:{path}", TOK, nsamples=4, seqlen=64, seed=0, mode="concat")
    assert small.describe()["read_scan"]["tokens_read"] == 50_000
    monkeypatch.setattr(data, "READ_TOKENS_FLOOR", 10**7)  # the whole file fits: read whole, no note
    whole = build_calibration(f"file:{path}", TOK, nsamples=4, seqlen=64, seed=0, mode="document")
    assert whole.describe()["read_scan"] is None and not whole.notes


def test_impossible_sample_counts_are_refused_before_reading(tmp_path):
    from calib_core.errors import InsufficientMemoryError

    with pytest.raises(InsufficientMemoryError, match="for their ids alone"):
        build_calibration("file:/does/not/matter.txt", TOK, nsamples=100_000, seqlen=100_000, mode="concat")


def test_sets_command_without_a_name_is_a_usage_error(capsys):
    from calib_core.cli import main as cli_main

    with pytest.raises(SystemExit) as exited:
        cli_main(["sets", "delete"])
    assert exited.value.code == 2 and "'sets delete' needs a set name" in capsys.readouterr().err
