"""The bench report's CPU per event: the whole stack's CPU over the events of a run."""

from bench.report import table
from bench.stack import cpu_ms_per_event


def test_cpu_per_event_sums_every_process_and_divides_by_the_events() -> None:
    spent = {"points": 1.5, "database": 6.0, "broker": 0.5, "bench": 2.0}
    assert cpu_ms_per_event(spent, 2_000) == 5.0


def test_a_run_without_events_has_no_cpu_per_event() -> None:
    assert cpu_ms_per_event({"database": 0.25}, 0) is None
    rows = _rows(table({"pipeline": {"cpu_ms_per_event": None}}))
    assert rows["CPU per event, pipeline (whole stack)"].split()[-2] == "-"


def test_the_table_shows_the_pipeline_and_end_to_end_cpu_per_event() -> None:
    rows = _rows(table({"pipeline": {"cpu_ms_per_event": 3.97}, "e2e": {"cpu_ms_per_event": 8.59}}))
    # Shown to a tenth of a millisecond, as the table shows every figure under 100.
    assert rows["CPU per event, pipeline (whole stack)"].split()[-2] == "4.0"
    assert rows["CPU per event, end to end (whole stack)"].split()[-2] == "8.6"


def _rows(shown: str) -> dict[str, str]:
    """The table's lines by their label."""
    return {line.split("  ")[0]: line for line in shown.splitlines()}
