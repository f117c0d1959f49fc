"""Calibration data: build a set from a corpus, an upload or pasted text, or let the model write one."""

import tempfile
from pathlib import Path

import plotly.express as px
import streamlit as st

from app_ui.cache import access_policy, cached_model, mark_model_loaded, model_loaded
from app_ui.forms import any_invalid, bounded_number, preview
from app_ui.live import live_view, page_kind
from app_ui.strategy import strategy_inputs
from calib_core.assets import BUILTIN_CORPORA
from calib_core.data import sets
from calib_core.data.documents import LIST_MAX_CHARACTERS, load_documents, parse_source, read_upload
from calib_core.data.selfgen import GenerationConfig, filter_by_perplexity
from calib_core.data.sources import BUILTIN_SOURCES, MODES, eligibility_floor
from calib_core.data.strategies import STRATEGIES
from calib_core.data.text_files import FILE_TYPES, HOW_TEXTS_SPLIT, split_at_blank_lines
from calib_core.data.tokens import token_lengths
from calib_core.errors import CalibLabError, SourceError
from calib_core.experiments.run_figures import whole_counts
from calib_core.jobs import manager, tasks
from calib_core.jobs.progress import generation_line
from calib_core.runs import RunStore

KIND = page_kind(__file__)  # the jobs this page starts and follows

MAX_UPLOAD_MB = 50
PREVIEW_TOKENIZE_CHARACTERS = 4_000_000


def set_name_field(column, label: str, default: str, key: str) -> str | None:
    """A set name, checked as it is typed: None (with the reason shown) when it is invalid, or when it
    names an existing set and the user has not ticked "Replace it"."""
    name = column.text_input(label, default, key=key)
    if not name:
        return None
    try:
        sets.check_name(name)
    except CalibLabError as exc:
        column.error(str(exc))
        return None
    if name in sets.list_sets() and not column.checkbox(f"Replace the existing set:{name}", key=f"{key}-replace"):
        column.warning(f"set:{name} already exists: tick the box to replace it, or choose another name.")
        return None
    return name


def sampling_choice(lengths: list[int], unit: str) -> None:
    """How a run will draw windows from these texts (the Prune page's sampling mode), with a default that
    works: concat when no text is longer than the Prune page's seqlen."""
    form = st.session_state.setdefault("prune_form", {})
    seqlen = form.get("seqlen", 256)
    long_enough = sum(n > eligibility_floor("document", seqlen) for n in lengths)
    if long_enough == 0 and form.get("mode", "document") != "concat":
        form["mode"] = "concat"
        st.info(f"No text is longer than seqlen = {seqlen} {unit}, so a run will join them (concat mode). Change it "
                "below or on the Prune page (More settings).")
    form["mode"] = st.radio(
        "Sampling mode for runs", list(MODES), list(MODES).index(form.get("mode", "document")), horizontal=True,
        key="calib_mode", help=f"{long_enough} of {len(lengths)} texts are longer than seqlen = {seqlen} {unit}. "
                               + "; ".join(f"{name}: {text}" for name, text in MODES.items()))
st.title("Calibration data")
with st.expander("From text to calibration samples"):
    st.markdown("A run draws `nsamples` windows of `seqlen` tokens with a seeded RNG: from one random document "
                "longer than `seqlen` each (document mode), from all texts joined with a separator (concatenate "
                "mode; the authors' Wanda code joins self-generated texts with a space), or a whole random text "
                "with more than `seqlen` - 3 tokens, padded with token id 0 up to `seqlen` (document_pad mode, "
                "the authors' OWL/DSnoT code). The same (source, nsamples, seqlen, seed, tokenizer) always gives "
                "the same samples and fingerprint.\n\n"
                "Self-generation (Ji et al. 2025): from a $P$-token prefix the model samples a continuation "
                "$x_{P+1..T} \\sim p_\\theta(\\cdot \\mid x_{<t})$ (temperature, top-p, top-k, repetition penalty); each "
                "text is scored by $\\mathrm{ppl} = \\exp(-\\frac{1}{T-1}\\sum_t \\log p_\\theta(x_t \\mid x_{<t}))$ and "
                "texts above the $(1 - \\text{drop})$ percentile are dropped: the set keeps what the model "
                "itself finds most likely, which is close to its pretraining distribution.")

build, choose, generate = st.tabs(["Build a set", "Choose windows (strategies)", "Self-generate"])
with build:
    how = st.radio("From", ["Builtin corpus", "Saved set", "Upload a file", "Paste text", "Hub dataset"], horizontal=True)
    texts, origin = None, None
    try:
        if how == "Builtin corpus":
            name = st.selectbox("Corpus", BUILTIN_CORPORA)
            origin = f"builtin:{name}"
            texts = load_documents(origin)
        elif how == "Saved set":
            names = sets.list_sets()
            if names:
                origin = "set:" + st.selectbox("Set", names)
                texts = load_documents(origin)
            else:
                st.caption("No saved sets yet.")
        elif how == "Upload a file":
            upload = st.file_uploader(f"{', '.join(FILE_TYPES)} (at most {MAX_UPLOAD_MB} MB)",
                                      type=[t.lstrip(".") for t in FILE_TYPES],
                                      help=f".txt: {HOW_TEXTS_SPLIT} Other types: one text per row or line.")
            column = st.text_input("Text column (empty: detect)") or None
            if upload is not None:
                if upload.size > MAX_UPLOAD_MB * 1024**2:
                    st.error(f"'{upload.name}' is {upload.size / 1024**2:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
                else:
                    scratch = access_policy().workspace if access_policy().shared else None
                    with tempfile.TemporaryDirectory(dir=scratch) as folder:
                        path = Path(folder) / Path(upload.name).name
                        path.write_bytes(upload.getvalue())
                        texts = read_upload(path, column)
                    origin = f"upload:{upload.name}"
        elif how == "Paste text":
            pasted = st.text_area("Texts, separated by blank lines", max_chars=LIST_MAX_CHARACTERS,
                                  help=HOW_TEXTS_SPLIT + " An uploaded .txt file is split the same way.")
            if len(pasted) > LIST_MAX_CHARACTERS:  # the widget's limit is the browser's; check it here too
                raise SourceError(f"Pasted text is longer than {LIST_MAX_CHARACTERS:,} characters: upload a file.")
            texts = split_at_blank_lines(pasted) or None
            origin = "pasted"
        else:
            spec = st.text_input("hf:NAME[:CONFIG[:SPLIT]]", "hf:wikitext:wikitext-2-raw-v1:train")
            limit = st.number_input("First N documents", 10, 100000, 1000)
            if st.button("Stream"):
                texts, origin = load_documents(access_policy().source(spec), limit=limit), spec
    except CalibLabError as exc:
        st.error(str(exc))
        texts = None
    if texts:
        st.write(f"{len(texts)} texts from `{origin}`")
        shown = st.number_input("Preview text number", 1, len(texts), 1) - 1
        preview(st, "Preview", texts[shown][:2000], 150)
        counted = texts[:2000]  # enough for the shape of the distribution
        too_long = sum(map(len, counted)) > PREVIEW_TOKENIZE_CHARACTERS  # tokenizing would take minutes
        if too_long:
            st.caption(f"Lengths in words: more than {PREVIEW_TOKENIZE_CHARACTERS:,} characters is too much to "
                       f"tokenize for a preview (a run reads the source as a stream).")
        if not too_long and (model_loaded() or st.toggle("Count tokens with the model's tokenizer (loads it)")):
            tokenizer = cached_model(st.session_state.model_spec, **st.session_state.model_options).tokenizer
            mark_model_loaded()
            lengths, unit = token_lengths(tokenizer, counted), "tokens"
        else:
            lengths, unit = [len(t.split()) for t in counted], "words"
        lengths_chart = px.histogram(x=lengths, nbins=40, labels={"x": f"{unit} per text"},
                                     title=f"Length of {len(counted)} texts")
        st.plotly_chart(whole_counts(lengths_chart, len(counted)).update_yaxes(title="texts"), width="stretch")
        sampling_choice(lengths, unit)
        if origin.startswith(("builtin:", "set:")) and st.button("Use as calibration source"):
            st.session_state.calib_source = origin
        name = set_name_field(st, "Save as set", "", "save_name")
        if st.button("Save set", disabled=not name, help="Pasted or uploaded texts become a source once saved."):
            try:
                sets.save_set(name, [{"text": t} for t in texts], {"kind": "source", "source": origin})
                st.session_state.calib_source = f"set:{name}"
                st.success(f"Saved set:{name}; it is now the calibration source.")
            except CalibLabError as exc:
                st.error(str(exc))

    st.subheader("Saved sets")
    if st.session_state.get("set_deleted"):
        st.success(st.session_state.pop("set_deleted"))
    runs = RunStore().list()
    for name in sets.list_sets():
        c1, c2, c3 = st.columns([3, 1, 1])
        c1.write(f"`set:{name}`")
        used_by = sets.runs_using(name, runs)
        with c2.popover("Delete", icon=":material/delete:"):
            st.markdown(f"Delete `set:{name}`? Its texts are removed from this machine. "
                        + (f"{len(used_by)} run(s) used it ({', '.join(f'#{i}' for i in used_by)}): they keep their "
                           "records, and show the set as deleted." if used_by else "No run used it."))
            if st.button(f"Yes, delete set:{name}", key=f"del-{name}", type="primary"):
                sets.delete_set(name)
                if st.session_state.calib_source == f"set:{name}":
                    st.session_state.calib_source = "builtin:wiki"
                st.session_state.set_deleted = (f"Deleted set:{name}." + (
                    f" Runs {', '.join(f'#{i}' for i in used_by)} now show it as deleted." if used_by else ""))
                st.rerun()
        with tempfile.TemporaryDirectory() as folder:
            out = sets.export_set(name, Path(folder) / f"{name}.jsonl")
            c3.download_button("Export", out.read_bytes(), file_name=f"{name}.jsonl", key=f"exp-{name}")

with choose:
    st.markdown("A run's `nsamples` windows are drawn at random from its source unless a strategy chooses them. "
                "The pool strategies draw a candidate pool (pool factor x nsamples windows) from the source and keep "
                "the nsamples that score best; self-calibration and icl-format make their windows. The strategy and "
                "its settings go with every run started on the Prune page, and every run records what it chose.")
    with st.expander("The strategies"):
        st.markdown("\n".join(f"- **{s.name}**: {s.explain}" for s in STRATEGIES.values()))
    strategy_inputs(st, "calib", explain=True)
    st.subheader("A mix of sources")
    st.caption("Windows from several sources by weight (a uniform mix beat every single source for SparseGPT in IGSP), "
               "optionally with rows of random token ids that exercise the whole vocabulary (ExLlamaV3's default "
               "calibration).")
    columns = st.columns(len(BUILTIN_SOURCES) + 1)
    weights = {source: bounded_number(column, source, 0.0, 1000.0, 1.0, key=f"mix-{source}", format="%.1f")
               for source, column in zip(BUILTIN_SOURCES, columns)}
    random_rows = bounded_number(columns[-1], "random rows", 0.0, 0.95, 0.0, key="mix-random", format="%.2f",
                                 help="Fraction of the windows made of uniform random token ids.")
    if not any_invalid(random_rows, *weights.values()):
        parts = [f"{source}={weight:g}" for source, weight in weights.items() if weight > 0]
        spec = "mix:" + ",".join(parts + ([f"random={random_rows:g}"] if random_rows else []))
        try:
            parse_source(spec)
            st.code(spec, language=None)
            if st.button("Use this mix as the calibration source"):
                st.session_state.calib_source = spec
                st.success(f"Runs started on the Prune page now draw from {spec}.")
        except CalibLabError as exc:
            st.error(str(exc))

with generate:
    st.markdown("The model continues short prefixes of real texts; the highest-perplexity fraction is dropped.")
    preset = st.session_state.get("selfgen_preset") or {}  # filled by a Start page preset
    c1, c2, c3 = st.columns(3)
    source = c1.selectbox("Prefixes from", BUILTIN_SOURCES, list(BUILTIN_SOURCES).index(preset.get("source", BUILTIN_SOURCES[0])))
    count = bounded_number(c2, "Texts", 1, 5000, preset.get("texts", 16), step=1)
    new_tokens = bounded_number(c3, "Max new tokens", 8, 4096, preset.get("new_tokens", 128), step=1,
                                help="The paper generates up to 2048 new tokens (GPU); a CPU manages a few hundred. "
                                     "Document and document_pad sampling need texts longer than seqlen.")
    c4, c5, c6 = st.columns(3)
    prefix = bounded_number(c4, "Prefix tokens", 1, 64, 2, step=1)
    drop = c5.slider("Drop highest-ppl fraction", 0.0, 0.9, 0.2)
    set_name = set_name_field(c6, "Save as set", preset.get("name", "selfgen"), "gen_name")
    ready = set_name is not None and not any_invalid(count, new_tokens, prefix)
    if st.button("Generate", type="primary", disabled=not ready):
        config = GenerationConfig(source=source, texts=int(count), max_new_tokens=int(new_tokens),
                                  prefix_tokens=int(prefix), drop_fraction=drop)
        spec, options, device = st.session_state.model_spec, dict(st.session_state.model_options), st.session_state.device
        try:  # before any generation: a bad size or model must not cost minutes of work
            config.validate()
            access_policy().generation(config.texts, config.max_new_tokens)
            spec = access_policy().model(spec, options["trust_remote_code"])
        except CalibLabError as exc:
            st.error(str(exc))
        else:
            st.session_state.gen_settings = {"name": set_name, "drop": drop}
            st.session_state.gen_job = manager().submit(
                f"self-generate {set_name}", tasks.self_generate, spec, options, device, config, set_name,
                device=device, kind=KIND).id

    def draw_generation(job):
        if not job.done and st.button("Cancel generation"):
            job.cancel()
        progress = job.events_of("generation")
        if not progress:
            st.progress(0.0, "Loading the model and the prefixes" if job.status == "running" else job.status)
        else:
            last = progress[-1]
            st.progress(last.texts_done / last.texts_total, generation_line(last))
            latest = next((e.latest_text for e in reversed(progress) if e.latest_text), "")
            if latest:
                preview(st, "Latest text", latest[:1500], 120)
            if last.ppls:  # the running distribution, with the threshold the filter would use now
                drop_now = st.session_state.get("gen_settings", {}).get("drop", 0.2)
                _, threshold = filter_by_perplexity(last.ppls, drop_now)
                fig = whole_counts(px.histogram(x=last.ppls, nbins=30, labels={"x": "perplexity under the generating model"}),
                                   len(last.ppls)).update_yaxes(title="texts")
                if threshold:
                    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"drop above {threshold:.1f}")
                st.plotly_chart(fig, width="stretch", key="gen_ppl_hist")
        if job.status == "finished":
            result = job.result
            early = " Cancelled early: what was generated before the cancel is kept." if result.cancelled else ""
            longer = ", ".join(f"{n} > {length}" for length, n in result.metadata["kept_texts_longer_than"].items())
            st.success(f"{len(result.kept_texts)} of {len(result.records)} texts kept (threshold "
                       f"{result.threshold or float('nan'):.2f}); saved as {result.metadata['saved_as']}.{early}"
                       f" Kept texts longer than N tokens: {longer}.")
        elif job.status in ("failed", "cancelled"):
            st.error(job.error or job.status)

    live_view("gen_job", KIND, draw_generation)
