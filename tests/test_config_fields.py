"""PruneConfig's option fields are written where each method lives, agree with the registry, and keep the point
keys of the committed reports."""

import inspect
import re
from dataclasses import fields

import pandas as pd
import pytest

from calib_core.errors import ConfigError
from calib_core.prune import PruneConfig
from calib_core.prune.config import Device, Target
from calib_core.prune.methods import ENGINE_OPTIONS, METHODS, all_options
from calib_core.prune.options import EngineOptions, declared_options, option


def test_the_config_fields_are_the_target_every_registry_option_and_the_device_with_their_defaults():
    names = [f.name for f in fields(PruneConfig)]
    assert names == [f.name for f in fields(Target)] + [o.field for o in all_options()] + [f.name for f in fields(Device)]
    defaults = PruneConfig()
    for o in all_options():
        assert getattr(defaults, o.field) == o.default, o.field


def test_each_method_option_is_a_written_field_of_the_module_the_method_lives_in():
    for method in METHODS.values():
        for o in method.options:
            owner = next(base for base in PruneConfig.__mro__ if o.field in getattr(base, "__annotations__", {}))
            source = inspect.getsource(inspect.getmodule(owner))
            assert re.search(rf"^    {o.field}: [\w |]+ = option\(", source, re.M), (method.name, o.field)
            assert inspect.getmodule(owner).__name__.startswith("calib_core.prune.")
    assert ENGINE_OPTIONS == declared_options(EngineOptions)


def test_declared_options_carry_kind_bounds_and_choices():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ToyOptions:
        toy_k: int = option(3, "k", low=1, high=9)
        toy_rule: str = option("a", "rule", choices=("a", "b"))
        toy_auto: float | None = option(None, "auto", kind=float, auto=(1.0, 2.0))

    k, rule, auto = declared_options(ToyOptions)
    assert (k.kind, k.low, k.high, k.flag) == (int, 1, 9, "--toy-k")
    assert rule.kind is str and rule.choices == ("a", "b")
    assert auto.kind is float and auto.resolve(None, nm=True) == 2.0
    with pytest.raises(ConfigError, match="toy_k must be at least 1 and at most 9, got 10"):
        k.resolve(10, nm=False)


def test_sweep_point_keys_of_the_committed_reports_are_unchanged():
    from calib_core.data.strategies import STRATEGIES
    from calib_core.studies.advisor_validation import ValidationSettings
    from calib_core.studies.tournament import ROUND_ONE, ROUND_ONE_RUNS, TournamentSettings, pilot_settings

    revised = {s.name for s in STRATEGIES.values() if s.revision}
    first = TournamentSettings(**ROUND_ONE, dtype="bfloat16")
    committed = set(pd.read_csv(ROUND_ONE_RUNS)["point_key"])
    keys = {p.key for m in first.models for p in first.points(m) if p.strategy not in revised}
    assert len(keys) == 300 and keys <= committed
    validation = ValidationSettings().tournament
    validation.dtype = "bfloat16"
    measured = set(pd.read_csv("docs/results/advisor-runs.csv")["point_key"])
    keys = {p.key for m in validation.models for p in validation.points(m) if p.strategy not in revised}
    assert keys and keys <= measured
    pilot = set(pd.read_csv("docs/results/strategies-pilot-runs.csv")["point_key"])
    scales = pilot_settings()
    for settings in scales:
        settings.dtype = "bfloat16"
    keys = {p.key for s in scales for m in s.models for p in s.points(m)}
    assert pilot <= keys and len(pilot) == 16
