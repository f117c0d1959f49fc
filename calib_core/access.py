"""What a visitor of a shared app may reach.

The library and the CLI have the full power of the user who runs them. The app is different: on an
address other than loopback (or with CALIB_LAB_SHARED=1) anyone who reaches the port is a visitor
with no login, so the app checks every path and size a page sends to the library through an
AccessPolicy: file and token sources, model folders and save folders only inside one workspace folder
(paths resolved, so `..` and symlinks that leave it are refused), no repository code
(trust_remote_code), and caps on sizes. A local app (loopback, the default) keeps full power.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import AccessError

SHARED_ENV = "CALIB_LAB_SHARED"
WORKSPACE_ENV = "CALIB_LAB_WORKSPACE"
_PATH_SOURCES = ("file", "tokens")


def is_loopback(address: str | None) -> bool:
    """True for an address only this machine reaches; empty means every interface."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def default_workspace() -> Path:
    from .paths import data_dir

    return Path(os.environ.get(WORKSPACE_ENV) or data_dir() / "workspace")


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one request may ask for; None = no bound beyond the memory estimate."""

    nsamples: int | None = None
    seqlen: int | None = None
    eval_windows: int | None = None
    sweep_points: int | None = None
    generated_texts: int | None = None
    new_tokens: int | None = None
    scored_items: int | None = None


SHARED_LIMITS = Limits(nsamples=256, seqlen=2048, eval_windows=256, sweep_points=500, generated_texts=512,
                       new_tokens=2048, scored_items=512)


@dataclass(frozen=True)
class AccessPolicy:
    shared: bool = False
    workspace: Path | None = None  # shared: the one folder visitors' paths may point into
    limits: Limits = Limits()

    @classmethod
    def for_server(cls, address: str | None, environ=os.environ) -> AccessPolicy:
        """The policy of an app served on `address`: shared unless loopback and not forced shared."""
        if environ.get(SHARED_ENV, "") in ("1", "true", "yes") or not is_loopback(address):
            workspace = default_workspace()
            workspace.mkdir(parents=True, exist_ok=True)
            return cls(True, workspace.resolve(), SHARED_LIMITS)
        return cls()

    @property
    def allows_remote_code(self) -> bool:
        return not self.shared

    def describe(self) -> str:
        if not self.shared:
            return "local: full access"
        return f"shared: files only in {self.workspace}, no repository code, sizes capped"

    # ------------------------------------------------------------ paths
    def path(self, value: str | os.PathLike, what: str) -> Path:
        """`value` as an absolute path; shared: relative to the workspace and refused outside it."""
        path = Path(value).expanduser()
        if not self.shared:
            return path
        resolved = (self.workspace / path).resolve()  # an absolute `path` replaces the workspace here
        if not resolved.is_relative_to(self.workspace):
            raise AccessError(f"This app is shared: {what} must be inside the workspace folder {self.workspace}; "
                              f"'{value}' is not.")
        return resolved

    def source(self, spec: str) -> str:
        """A source spec whose file or token path is allowed (rewritten to the resolved path)."""
        kind, sep, rest = (spec or "").partition(":")
        if self.shared and sep and kind in _PATH_SOURCES:
            return f"{kind}:{self.path(rest, 'file and token sources')}"
        return spec

    def model(self, spec: str, trust_remote_code: bool = False) -> str:
        from . import assets

        if trust_remote_code and not self.allows_remote_code:
            raise AccessError("This app is shared: models may not run their repository's own code "
                              "(trust_remote_code). Run the app locally for such a model.")
        if not self.shared or spec in assets.BUNDLED:
            return spec
        looks_like_path = spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or Path(spec).exists()
        return str(self.path(spec, "model folders")) if looks_like_path else spec

    def save_folder(self, folder: str) -> str:
        return str(self.path(folder, "save folders"))

    # ------------------------------------------------------------ sizes
    def check_size(self, what: str, value: int | None, limit: int | None) -> None:
        if limit is not None and value is not None and value > limit:
            raise AccessError(f"{what} {value} is above this shared app's limit of {limit}.")

    def spec(self, spec):
        """A RunSpec with every path and size checked (paths resolved)."""
        limits, evaluation = self.limits, spec.evaluation
        self.check_size("nsamples", spec.nsamples, limits.nsamples)
        self.check_size("seqlen", spec.seqlen, limits.seqlen)
        self.check_size("eval seqlen", evaluation.seqlen, limits.seqlen)
        self.check_size("eval windows", evaluation.windows, limits.eval_windows)
        if self.shared and evaluation.windows is None:
            raise AccessError("This app is shared: give the number of evaluation windows.")
        return replace(
            spec, model=self.model(spec.model, spec.trust_remote_code),
            calib=self.source(spec.calib) if spec.calib else spec.calib,
            evaluation=replace(evaluation, sources=[self.source(s) for s in evaluation.sources]),
            save=self.save_folder(spec.save) if spec.save else None,
            report=str(self.path(spec.report, "report files")) if spec.report else None)

    def grid(self, grid):
        """A SweepGrid whose sources, model and sizes are allowed."""
        from .experiments.sweeps import MAX_SWEEP_POINTS

        grid.check_bounds(self.limits.sweep_points or MAX_SWEEP_POINTS, self.limits.nsamples, self.limits.seqlen)
        self.check_size("eval windows", grid.eval_windows, self.limits.eval_windows)
        return replace(grid, model=self.model(grid.model), calibration=[self.source(s) for s in grid.calibration],
                       eval=[self.source(s) for s in grid.eval])

    def generation(self, texts: int, max_new_tokens: int) -> None:
        self.check_size("texts to generate", texts, self.limits.generated_texts)
        self.check_size("new tokens per text", max_new_tokens, self.limits.new_tokens)

    def scoring(self, items: int, tokens: int) -> None:
        self.check_size("items per set", items, self.limits.scored_items)
        self.check_size("tokens per item", tokens, self.limits.seqlen)
