"""The gateway refuses to start on a weak secret or a missing service URL, and says which."""

from __future__ import annotations

import pytest

from services.gateway.settings import gateway_settings

SECRET = "x" * 48
URLS = {
    "progress": "http://127.0.0.1:8101",
    "points": "http://127.0.0.1:8102",
    "leaderboards": "http://127.0.0.1:8103",
    "credits": "http://127.0.0.1:8104",
    "badges": "http://127.0.0.1:8105",
}


def test_defaults_and_overrides() -> None:
    settings = gateway_settings({"JWT_SECRET": SECRET, "SERVICE_URLS": URLS, "GATEWAY": {}})
    assert (settings.connect_timeout_seconds, settings.read_timeout_seconds) == (1.0, 5.0)
    assert settings.max_body_bytes == 64 * 1024
    tuned = gateway_settings(
        {
            "JWT_SECRET": SECRET,
            "SERVICE_URLS": URLS,
            "GATEWAY": {"read_timeout_seconds": 2.5, "team_cache_seconds": 0},
        }
    )
    assert tuned.read_timeout_seconds == 2.5 and tuned.team_cache_seconds == 0


@pytest.mark.parametrize("secret", ["", None, "short-secret"])
def test_a_missing_or_short_secret_stops_the_start(
    secret: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        gateway_settings({"JWT_SECRET": secret, "SERVICE_URLS": URLS})
    assert "JWT_SECRET" in str(stopped.value.code)
    if secret:
        assert secret not in str(stopped.value.code)  # never echo a secret into logs


def test_every_service_needs_an_http_url() -> None:
    with pytest.raises(SystemExit) as stopped:
        gateway_settings({"JWT_SECRET": SECRET, "SERVICE_URLS": {**URLS, "badges": ""}})
    assert "badges" in str(stopped.value.code)
    with pytest.raises(SystemExit):
        gateway_settings({"JWT_SECRET": SECRET, "SERVICE_URLS": {**URLS, "points": "ftp://x"}})


def test_an_unknown_setting_is_named() -> None:
    with pytest.raises(SystemExit) as stopped:
        gateway_settings(
            {"JWT_SECRET": SECRET, "SERVICE_URLS": URLS, "GATEWAY": {"read_timeout": 3}}
        )
    assert "read_timeout" in str(stopped.value.code)
