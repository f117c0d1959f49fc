"""Text sources, files with problems, and seeded sampling."""

import json

import numpy as np
import pytest
import torch

from calib_core import assets, sets
from calib_core.data import build_calibration, load_documents, read_text_file, sample_windows
from calib_core.errors import SourceError
from tests.tiny import CharTokenizer

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
    ids = sample_windows(docs, nsamples=20, seqlen=25, seed=0, mode="document")
    for row in ids.tolist():
        assert row == list(range(row[0], row[0] + 25))  # only the 100-token doc is long enough


def test_concat_mode_can_cross_documents_and_needs_enough_tokens():
    ids = sample_windows([[1] * 5, [2] * 5], nsamples=3, seqlen=8, seed=0, mode="concat")
    assert ids.shape == (3, 8)
    with pytest.raises(SourceError, match="fewer than seqlen"):
        sample_windows([[1] * 5], nsamples=1, seqlen=8, seed=0, mode="concat")


def test_too_short_documents_are_explained():
    with pytest.raises(SourceError, match="No document has more than 50 tokens"):
        sample_windows([[1] * 10, [2] * 20], nsamples=1, seqlen=50, seed=0, mode="document")


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.txt", b"", "is empty"),
        ("blank.txt", b"  \n\n ", "only whitespace"),
        ("binary.txt", b"\x00\x01\x02abc" * 10, "looks binary"),
        ("latin.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "a"}\n{oops', "not valid JSONL"),
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
