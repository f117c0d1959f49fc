"""What one pruning run is: `RunSpec` (model, calibration, the PruneConfig, outputs) holding an
`EvalSpec` (how the result is measured). The CLI's flags, the Prune page's form, a sweep's point
and a stored record all become a RunSpec; `reproduce_command` turns one back into the CLI command
that remakes it. Records keep the flat field names of earlier releases (`eval`, `ppl_protocol`, ...)."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields

from .. import assets
from ..data.sources import DEFAULT_CONCAT_SEPARATOR
from ..data.strategies import non_default
from ..prune import PruneConfig
from ..prune.methods import all_options

# EvalSpec field -> its name in a run record's "job" (and in the RunSpec of earlier releases).
RECORD_NAMES = {"sources": "eval", "seqlen": "eval_seqlen", "windows": "eval_windows", "protocol": "ppl_protocol",
                "cloze_items": "cloze_items", "lm_eval_tasks": "lm_eval_tasks", "lm_eval_limit": "lm_eval_limit",
                "lm_eval_include": "lm_eval_include"}


@dataclass
class EvalSpec:
    """How a model is measured after pruning (and a dense baseline, the same way)."""

    sources: list[str] = field(default_factory=lambda: ["builtin:wiki"])
    seqlen: int | None = None  # perplexity window; default: the run's calibration seqlen
    windows: int | None = None  # at most this many windows per source
    protocol: str = "heldout"  # heldout | wikitext2 (metrics/perplexity.py)
    cloze_items: int = 0  # offline zero-shot proxy (metrics/cloze.py) on each source; 0 = skip
    lm_eval_tasks: list[str] | None = None  # zero-shot accuracy via lm-eval (metrics/zeroshot.py); ["paper"] = paper's set
    lm_eval_limit: int | None = None  # examples per task (None: all)
    lm_eval_include: str | None = None  # a local lm-eval task folder

    def as_record(self) -> dict:
        return {RECORD_NAMES[k]: v for k, v in asdict(self).items()}

    @classmethod
    def of_record(cls, job: dict) -> EvalSpec:
        return cls(**{k: job[name] for k, name in RECORD_NAMES.items() if name in job})


@dataclass
class RunSpec:
    model: str = assets.DEFAULT_MODEL
    dtype: str = "float32"
    trust_remote_code: bool = False
    calib: str | None = "builtin:wiki"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    mode: str = "document"  # document | concat | document_pad (data/sources.py)
    concat_separator: str = DEFAULT_CONCAT_SEPARATOR  # concat mode: what joins the documents
    text_column: str | None = None
    strategy: str = "random"  # how the windows are chosen (data/strategies/)
    strategy_options: dict = field(default_factory=dict)  # the strategy's settings that differ from its defaults
    config: PruneConfig = field(default_factory=PruneConfig)
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    save: str | None = None  # a folder for the pruned model, its tokenizer and the report
    overwrite: bool = False  # replace a non-empty save folder
    push_to_hub: str | None = None  # OWNER/NAME: upload the saved folder (needs `save`)
    stream: bool = False  # read each block from disk for its turn (models larger than memory)
    report: str | None = None  # a JSON file for the report
    keep_masks: bool = True  # for mask agreement between runs (metrics/agreement.py)

    @property
    def eval_seqlen(self) -> int:
        return self.evaluation.seqlen or self.seqlen

    def as_record(self) -> dict:
        """The record's "job": every field but the config, the evaluation's fields flat."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("config", "evaluation")}
        return {**flat, **self.evaluation.as_record()}

    def __setstate__(self, state: dict) -> None:
        """A job queued by an earlier release (a pickled `pipeline.PruneJob`, evaluation fields flat)."""
        if "evaluation" not in state:
            flat = {name: state.pop(name) for name in RECORD_NAMES.values() if name in state}
            state["evaluation"] = EvalSpec.of_record(flat)
        self.__dict__.update(state)


def spec_of_record(record: dict) -> RunSpec:
    """The RunSpec a stored run record was made by (fields a newer or older version lacks: defaults)."""
    known = {f.name for f in fields(RunSpec)} - {"config", "evaluation"}
    config_fields = {f.name for f in fields(PruneConfig)}
    config = PruneConfig(**{k: v for k, v in record["config"].items() if k in config_fields})
    job = record["job"]
    return RunSpec(**{k: v for k, v in job.items() if k in known}, config=config,
                   evaluation=EvalSpec.of_record(job))


def check_outputs(spec: RunSpec) -> None:
    """Fail before any work when the run's save folder or report file cannot be written."""
    from ..errors import OutputError
    from ..files import check_output_file, check_output_folder

    if spec.push_to_hub and not spec.save:
        raise OutputError("Uploading to the hub needs a save folder (--save DIR): the folder is what is uploaded.")
    if spec.save:
        check_output_folder(spec.save, spec.overwrite)
    if spec.report:
        check_output_file(spec.report)


def reproduce_command(spec: RunSpec) -> str:
    """`python -m calib_core prune ...` with every setting of `spec` that differs from the CLI's defaults
    (the inverse of cli.run_spec, kept in step by a round-trip test)."""
    config, defaults, evaluation = spec.config, PruneConfig(), spec.evaluation
    # the dtype always: the CLI's default (auto) depends on the machine
    parts = ["python", "-m", "calib_core", "prune", "--model", spec.model, "--dtype", spec.dtype]
    if spec.stream:
        parts.append("--stream")
    if spec.trust_remote_code:
        parts.append("--trust-remote-code")
    parts += ["--method", config.method]
    if config.base:
        parts += ["--base", config.base]
    if config.parsed_pattern.is_nm:
        parts += ["--pattern", config.pattern]
    else:
        parts += ["--sparsity", f"{config.sparsity:g}"]
    if config.device != defaults.device:
        parts += ["--device", config.device]
    for option in all_options():
        value = getattr(config, option.field)
        if value != getattr(defaults, option.field):
            parts += [option.flag, str(value)]
    if spec.calib:
        parts += ["--calib", spec.calib, "--nsamples", str(spec.nsamples), "--seqlen", str(spec.seqlen),
                  "--seed", str(spec.seed)]
        if spec.mode != "document":
            parts += ["--mode", spec.mode]
        if spec.mode == "concat" and spec.concat_separator != DEFAULT_CONCAT_SEPARATOR:
            parts += ["--concat-separator", spec.concat_separator.encode("unicode_escape").decode()]
        if spec.text_column:
            parts += ["--text-column", spec.text_column]
        if spec.strategy != "random":
            parts += ["--strategy", spec.strategy]
            for name, value in sorted(non_default(spec.strategy, spec.strategy_options).items()):
                parts += ["--" + name.replace("_", "-"), str(value)]
    if evaluation.sources:
        for source in evaluation.sources:
            parts += ["--eval", source]
        if evaluation.protocol != "heldout":
            parts += ["--ppl-protocol", evaluation.protocol]
        if evaluation.seqlen:
            parts += ["--eval-seqlen", str(evaluation.seqlen)]
        if evaluation.windows:
            parts += ["--eval-windows", str(evaluation.windows)]
    else:
        parts.append("--no-eval")
    if spec.save:
        parts += ["--save", spec.save]
    return shlex.join(parts)
