"""The shape every study has: a plan (what a dry run lists), a resumable run, a report, and the command that
remakes it. `conduct` is the one skeleton the CLI runs for every study: dry run, or check the outputs, run
(unless report-only), say what ran and failed, write the report."""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

# Flags that change what a command does this time, not what its report holds: left out of the remaking command.
ONE_OFF_FLAGS = ("--report-only", "--dry-run")


@dataclass
class Plan:
    """A study's points in run order: `done` are finished in the run store, `carried` supplied by an earlier
    runs CSV (skipped, their rows join the report)."""

    points: list  # SweepPoint
    done: set[str]
    carried: set[str] = field(default_factory=set)
    carried_from: str | None = None

    def lines(self) -> list[str]:
        """One line per point (done, carried or todo), then how many are finished."""
        lines = []
        for point in self.points:
            state = "done" if point.key in self.done else "carried" if point.key in self.carried else "todo"
            lines.append(f"{state:7}  {point.key}  {point.label()}")
        finished = sum(p.key in self.done for p in self.points)
        carried = sum(p.key in self.carried and p.key not in self.done for p in self.points)
        lines.append(f"{finished}/{len(self.points)} points finished"
                     + (f", {carried} carried over from {self.carried_from}" if self.carried_from else ""))
        return lines


class Study(ABC):
    """One question answered by many runs. Subclasses hold their settings and output paths."""

    name: str  # the subcommand that runs it

    @abstractmethod
    def plan(self, store) -> Plan:
        """The points and which are finished; runs nothing, writes nothing."""

    def check_outputs(self) -> None:
        """Refuse, before any run, outputs that cannot be written (a bad folder, a file in the way)."""

    @abstractmethod
    def run(self, store, on_event=None):
        """Run every point not finished (resumable; an interrupted run keeps what finished); a SweepSummary."""

    @abstractmethod
    def report(self, store, command: str) -> Path:
        """Write the report from what is finished, naming `command` as what made it; its path."""


def remake_command(argv: list[str]) -> str:
    """The command line that remakes a study's runs and report from a command's arguments."""
    return "python -m calib_core " + shlex.join(a for a in argv if a not in ONE_OFF_FLAGS)


def conduct(study: Study, store, argv: list[str], dry_run: bool = False, report_only: bool = False,
            on_event=None, say=print, warn=print) -> int:
    """The skeleton every study command runs; the exit status (1 when a point failed)."""
    if dry_run:
        for line in study.plan(store).lines():
            say(line)
        return 0
    study.check_outputs()
    failed = []
    if not report_only:
        summary = study.run(store, on_event)
        failed = summary.failed
        say(f"{study.name}: {summary.ran} ran, {summary.skipped} skipped, {len(failed)} failed")
        for failure in failed:
            warn(f"failed: {failure}")
    say(f"report: {study.report(store, remake_command(argv))}")
    return 1 if failed else 0
