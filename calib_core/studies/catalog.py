"""Each study as a Study (study.py): the reproduction, the tournament, the tournament's pilot and the advisor's
validation, built from their settings and output paths. They join a study's module with its report module, so
neither of those imports the other's way round."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..experiments.sweeps import SweepSummary, run_sweep
from ..files import check_output_folder
from .advisor_validation import ValidationSettings
from .reproduce import ReproSettings
from .study import Plan, Study
from .tournament import TournamentSettings

# The first tournament's report, linked from the powered one's.
EARLIER_TOURNAMENT = "strategies-2026-12-03/strategies.md"


@dataclass
class Reproduction(Study):
    """The paper's four questions on one model (reproduce.py, reproduce_report.py)."""

    settings: ReproSettings
    out: str = "docs/results"
    previous: str | None = None  # an earlier report's runs.csv: its unchanged points are carried over
    runner: Callable = run_sweep  # or the Ray runner
    name = "reproduce"

    def _previous(self):
        import pandas as pd

        return pd.read_csv(self.previous) if self.previous else None

    def plan(self, store) -> Plan:
        from .reproduce import ordered_points, points_to_run

        points = ordered_points(self.settings)
        to_run = {p.key for p in points_to_run(self.settings, self._previous())}
        return Plan(points, store.finished_points(self.settings.name), {p.key for p in points} - to_run,
                    carried_from=self.previous)

    def check_outputs(self) -> None:
        check_output_folder(self.out, overwrite=True)  # the report replaces its own files

    def run(self, store, on_event=None) -> SweepSummary:
        from .reproduce import run_reproduction

        return run_reproduction(self.settings, store, on_event, runner=self.runner, previous=self._previous())

    def report(self, store, command: str) -> Path:
        from .reproduce_report import write_report

        return write_report(self.settings, store, self.out, command, previous=self.previous)


@dataclass
class Tournament(Study):
    """Every calibration strategy against random, per capability (tournament.py, tournament_report.py)."""

    settings: TournamentSettings
    out: str = "docs/results"
    earlier: str | None = EARLIER_TOURNAMENT  # an earlier protocol's report, linked
    name = "tournament"

    def plan(self, store) -> Plan:
        from .tournament import finished_keys

        points = [p for model in self.settings.models for p in self.settings.points(model)]
        return Plan(points, finished_keys(self.settings, store))

    def check_outputs(self) -> None:
        check_output_folder(self.out, overwrite=True)

    def run(self, store, on_event=None) -> SweepSummary:
        from .tournament import run_tournament

        return run_tournament(self.settings, store, on_event)

    def report(self, store, command: str) -> Path:
        from .tournament_report import write_tournament_report

        return write_tournament_report(self.settings, store, self.out, command, earlier=self.earlier)


@dataclass
class TournamentPilot(Study):
    """The random draws that measured the seed noise at two scales before the tournament's protocol was fixed;
    their rows go to the report folder's pilot CSV, which the tournament's report reads."""

    out: str = "docs/results"
    name = "tournament"

    def plan(self, store) -> Plan:
        from .tournament import pilot_settings

        points = [p for s in pilot_settings() for model in s.models for p in s.points(model)]
        return Plan(points, {key for s in pilot_settings() for key in store.finished_points(s.name)})

    def check_outputs(self) -> None:
        check_output_folder(self.out, overwrite=True)

    def run(self, store, on_event=None) -> SweepSummary:
        from .tournament import pilot_settings, run_tournament

        summary = SweepSummary()
        for settings in pilot_settings():
            part = run_tournament(settings, store, on_event, references=False)  # no report uses them
            summary.ran, summary.skipped = summary.ran + part.ran, summary.skipped + part.skipped
            summary.failed += part.failed
            summary.run_ids += part.run_ids
        return summary

    def report(self, store, command: str) -> Path:
        from .tournament import pilot_frame
        from .tournament_protocol import PILOT_RUNS_FILE
        from .tournament_report import write_tournament_report

        Path(self.out).mkdir(parents=True, exist_ok=True)
        pilot_frame(store).to_csv(Path(self.out) / PILOT_RUNS_FILE, index=False)
        # The pilot's command remakes the pilot; the report it writes is the tournament's, named so.
        return write_tournament_report(TournamentSettings(), store, self.out, "python -m calib_core tournament",
                                       earlier=EARLIER_TOURNAMENT)


@dataclass
class AdvisorValidation(Study):
    """How well each advisor proxy ranks calibration sets as pruning does (advisor_validation.py and its
    report module): the tournament's runs it lacks, then the proxies they lack, then the agreement."""

    settings: ValidationSettings
    report_file: str = "docs/results/advisor.md"
    proxies_csv: str = "docs/results/advisor-proxies.csv"
    runs_csv: str = "docs/results/advisor-runs.csv"
    run_missing: bool = True  # False: validate on the runs of `frozen` as they were measured
    frozen: str | None = None
    name = "validate-advisor"
    on_message: Callable = print  # the proxies' progress messages

    def plan(self, store) -> Plan:
        from .tournament import finished_keys

        tournament = self.settings.tournament
        points = [p for model in tournament.models for p in tournament.points(model)]
        return Plan(points, finished_keys(tournament, store))

    def check_outputs(self) -> None:
        from ..files import check_output_file

        for path in (self.report_file, self.proxies_csv, self.runs_csv):
            check_output_file(path)

    def run(self, store, on_event=None) -> SweepSummary:
        from .advisor_validation import measure

        return measure(self.settings, store, Path(self.proxies_csv), self.run_missing, self.on_message,
                       Path(self.runs_csv), on_event, self._frozen())

    def _frozen(self) -> Path | None:
        return Path(self.frozen) if self.frozen and not self.run_missing else None

    def report(self, store, command: str) -> Path:
        from .advisor import VALIDATION_TABLE
        from .advisor_validation import assess, measured_runs, read_rows
        from .advisor_validation_report import write_results

        measured = measured_runs(self.settings, store, self._frozen())
        found, verdicts, costs = assess(self.settings, measured, Path(self.proxies_csv), VALIDATION_TABLE)
        return write_results(Path(self.report_file), found, verdicts, costs, self.settings, len(measured), command,
                             read_rows(Path(self.proxies_csv)))
