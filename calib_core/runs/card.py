"""The model card of a saved pruned model: Hugging Face card conventions (YAML metadata, then prose)
saying how it was made: method and settings, calibration data with its fingerprint and a few sample
lines, perplexities with their protocol, versions and commit, and the command that remakes it."""

from __future__ import annotations

from huggingface_hub import ModelCardData

from .. import assets
from ..prune.methods import ENGINE_OPTIONS, options_of
from .spec import RunSpec, reproduce_command

SAMPLE_LINES = 3  # calibration excerpts shown in the card
SAMPLE_CHARS = 160


def calibration_excerpts(calibration, tokenizer) -> list[str]:
    """The first tokens of the first calibration samples, as text (none without calibration)."""
    if calibration is None:
        return []
    return [tokenizer.decode(ids[:64], skip_special_tokens=True) for ids in calibration.input_ids[:SAMPLE_LINES]]


def _relevant_options(config: dict) -> list:
    """The options of the method, of its base (DSnoT, OWL) and of the engine."""
    options = options_of(config["method"], config.get("base")) + ENGINE_OPTIONS
    return [o for o in options if o.field in config]


def base_model_id(spec: str) -> str | None:
    """The hub id the card's `base_model` names: the bundled model's upstream, or a hub id as given."""
    if spec in assets.BUNDLED:
        return assets.BUNDLED[spec].upstream
    looks_like_hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    return spec if looks_like_hub_id else None


def model_card(record: dict, spec: RunSpec, samples: list[str]) -> str:
    """The card's text (README.md), from the run record and a few calibration excerpts."""
    config = record["config"]
    pattern = config["pattern"] if ":" in config["pattern"] else f"{config['sparsity']:.0%} unstructured"
    base = base_model_id(spec.model)
    metadata = ModelCardData(
        base_model=base, library_name="transformers", pipeline_tag="text-generation",
        license=assets.BUNDLED[spec.model].license if spec.model in assets.BUNDLED else None,
        tags=["pruned", "sparse", f"{config['method']}", "calib-lab"],
    )
    calib = record.get("calibration") or {}
    lines = [
        "---", metadata.to_yaml(), "---", "",
        f"# {base or spec.model}, pruned with {config['method']} ({pattern})", "",
        f"Pruned with Calibration Lab from `{spec.model}`"
        + (f" ([{base}](https://huggingface.co/{base}))" if base else "") + ". "
        f"Overall sparsity of the pruned linear layers: {record['overall_sparsity']:.4f}. "
        "The weights are stored dense (safetensors): load them as any model of this architecture.",
        "", "## How it was made", "",
        f"- Method: `{config['method']}`" + (f" (base `{config['base']}`)" if config.get("base") else "")
        + f", target {pattern}.",
        f"- Settings: {', '.join(f'{o.field}={config[o.field]}' for o in _relevant_options(config))} (every setting "
        "is in the report).",
    ]
    if record.get("allocation"):
        allocation = record["allocation"]
        lines.append("- OWL allocation (per-block sparsity): "
                     + ", ".join(f"{s:.3f}" for s in allocation["target_sparsities"]) + ".")
    if calib:
        lines += [f"- Calibration data: `{calib['source']}`, {calib['nsamples']} x {calib['seqlen']} tokens "
                  f"({calib['mode']} sampling, seed {calib['seed']}), token fingerprint `{calib['fingerprint']}`."]
        if samples:
            lines += ["", "Calibration excerpts (the first tokens of the first samples):", ""]
            lines += [f"> {' '.join(text.split())[:SAMPLE_CHARS]}…" for text in samples[:SAMPLE_LINES]]
    else:
        lines.append("- Calibration data: none (the method needs none).")
    lines += ["", "## Perplexity", ""]
    if record.get("perplexity"):
        lines += ["| evaluation data | perplexity | protocol | windows x tokens |", "|---|---|---|---|"]
        lines += [f"| {p['source']} | {p['ppl']:.3f} | {p['protocol'].split(':')[0]} | {p['windows']} x {p['seqlen']} |"
                  for p in record["perplexity"]]
        lines += ["", *sorted({f"- {p['protocol']}" for p in record["perplexity"]})]
    else:
        lines.append("Not measured.")
    lines += ["", *[f"Note: {note}" for note in record.get("notes", [])]]
    versions = record.get("versions", {})
    lines += ["", "## Reproduce", "", "```bash", reproduce_command(spec), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
              "", "The full run report is `calib_lab_report.json` in this folder.", ""]
    return "\n".join(lines)

