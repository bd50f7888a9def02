"""The CREDITS settings: defaults, an overridden requirement file, refusals at start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.credits.policy import CreditsPolicy, CreditsSettings, ExpiryTimer


def started(provider, section):
    provider.container = SimpleNamespace(config={"CREDITS": section})
    provider.setup()
    return provider


def test_defaults_are_those_of_the_architecture():
    settings = CreditsSettings()
    assert settings.course_valid_days == 365
    assert settings.grant_valid_days == 365
    assert settings.expiring_soon_days == 30
    assert settings.max_recommendations == 5
    policy = started(CreditsPolicy(), {}).policy
    assert policy.requirements.next_for("foundation").total == 12
    assert policy.expiring_window.days == 30


def test_the_requirement_file_can_be_replaced(tmp_path):
    path = tmp_path / "requirements.yml"
    path.write_text("advanced: {total: 2}\nleadership: {total: 3, tags: {coaching: 1}}\n")
    policy = started(CreditsPolicy(), {"requirements_file": str(path), "course_valid_days": 180})
    assert policy.policy.requirements.next_for("foundation").total == 2
    assert policy.policy.settings.course_valid_days == 180


@pytest.mark.parametrize(
    "section",
    [
        {"requirements_file": "/nonexistent/requirements.yml"},
        {"course_valid_days": 0},
        {"unknown_setting": 1},
    ],
)
def test_a_bad_configuration_stops_the_start_with_a_message(section):
    with pytest.raises(SystemExit, match="invalid CREDITS configuration"):
        started(CreditsPolicy(), section)


def test_the_expiry_timer_takes_its_interval_from_the_settings():
    timer = started(ExpiryTimer(), {"expiry_scan_interval_seconds": 0.5})
    assert timer.interval == 0.5 and timer.eager is True
    assert started(ExpiryTimer(), {}).interval == CreditsSettings().expiry_scan_interval_seconds
    with pytest.raises(SystemExit):
        started(ExpiryTimer(), {"expiry_scan_interval_seconds": -1})
