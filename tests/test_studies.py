"""The shape every study has (studies/study.py) and the one CLI handler the study commands share."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calib_core.cli import COMMANDS, build_parser
from calib_core.cli.studies import STUDIES, cmd_study
from calib_core.errors import OutputError
from calib_core.experiments.sweeps import SweepSummary
from calib_core.studies.study import Plan, Study, conduct, remake_command


@dataclass
class _Point:
    key: str

    def label(self) -> str:
        return f"point {self.key}"


@dataclass
class _CountingStudy(Study):
    """A study of three points whose run and report only say that they were called."""

    folder: Path
    failing: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    name = "counting"

    def plan(self, store) -> Plan:
        self.calls.append("plan")
        return Plan([_Point("a"), _Point("b"), _Point("c")], {"a"}, {"b"}, carried_from="earlier.csv")

    def check_outputs(self) -> None:
        self.calls.append("check")
        if not self.folder.parent.exists():
            raise OutputError(f"no folder {self.folder.parent}")

    def run(self, store, on_event=None) -> SweepSummary:
        self.calls.append("run")
        return SweepSummary(ran=2, skipped=1, failed=list(self.failing))

    def report(self, store, command: str) -> Path:
        self.calls.append(("report", command))
        return self.folder


def test_a_dry_run_lists_each_point_and_runs_nothing(tmp_path):
    study, said = _CountingStudy(tmp_path / "r.md"), []
    assert conduct(study, None, ["counting", "--dry-run"], dry_run=True, say=said.append) == 0
    assert study.calls == ["plan"]
    assert said[0].startswith("done") and said[1].startswith("carried") and said[2].startswith("todo")
    assert said[-1] == "1/3 points finished, 1 carried over from earlier.csv"


def test_conduct_checks_outputs_before_it_runs_and_names_the_remaking_command(tmp_path):
    study, said = _CountingStudy(tmp_path / "r.md"), []
    assert conduct(study, None, ["counting", "--seeds", "2", "--report-only", "--out", "a b"],
                   say=said.append) == 0
    assert study.calls == ["check", "run", ("report", "python -m calib_core counting --seeds 2 --out 'a b'")]
    assert said == ["counting: 2 ran, 1 skipped, 0 failed", f"report: {tmp_path / 'r.md'}"]
    # --report-only: no run, the report still names the command without the flag.
    again = _CountingStudy(tmp_path / "r.md")
    assert conduct(again, None, ["counting", "--report-only"], report_only=True, say=said.append) == 0
    assert again.calls == ["check", ("report", "python -m calib_core counting")]
    # An output that cannot be written stops the study before any run.
    blocked = _CountingStudy(tmp_path / "missing" / "deeper" / "r.md")
    with pytest.raises(OutputError):
        conduct(blocked, None, ["counting"], say=said.append)
    assert blocked.calls == ["check"]


def test_a_failed_point_is_reported_and_makes_the_exit_status_1(tmp_path):
    study, said, warned = _CountingStudy(tmp_path / "r.md", failing=["point b: boom"]), [], []
    assert conduct(study, None, ["counting"], say=said.append, warn=warned.append) == 1
    assert warned == ["failed: point b: boom"] and study.calls[-1][0] == "report"


def test_remake_command_quotes_what_a_shell_would_split():
    assert remake_command(["tournament", "--dry-run", "--previous", "my runs.csv"]) == \
        "python -m calib_core tournament --previous 'my runs.csv'"


def test_the_three_study_commands_share_one_handler_and_build_their_study():
    from calib_core.studies.catalog import AdvisorValidation, Reproduction, Tournament, TournamentPilot

    assert {name for name, c in COMMANDS.items() if c.handler is cmd_study} == set(STUDIES) == {
        "reproduce", "tournament", "validate-advisor"}
    parser = build_parser()
    built = {args: STUDIES[args[0]](parser.parse_args(list(args))) for args in [
        ("reproduce", "--seeds", "2"), ("tournament", "--quick"), ("tournament", "--pilot"), ("validate-advisor",)]}
    kinds = [type(study) for study in built.values()]
    assert kinds == [Reproduction, Tournament, TournamentPilot, AdvisorValidation]
    reproduction, quick = built[("reproduce", "--seeds", "2")], built[("tournament", "--quick")]
    assert reproduction.settings.seeds == 2 and reproduction.out == "docs/results"
    assert quick.out == "docs/results/quick" and quick.earlier is None and quick.settings.name == "tournament-quick"


def test_every_subcommand_in_the_table_is_in_the_parser_and_its_help():
    parser = build_parser()
    text = parser.format_help()
    for name, command in COMMANDS.items():
        assert name in text
        assert parser.parse_args([name] + _required(name)).command == name


def _required(name: str) -> list[str]:
    """The fewest arguments each subcommand parses with."""
    return {"sets": ["list"], "similarity": ["--sets", "builtin:wiki"], "sweep": ["grid.yaml"], "inspect": [
        "1", "--out", "x"], "advise": ["--candidates", "builtin:wiki", "builtin:code", "--target", "builtin:code"],
        "calib": ["--name", "x"]}.get(name, [])
