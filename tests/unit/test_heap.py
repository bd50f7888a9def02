"""Every service moves what it made at startup out of the garbage collector's reach."""

import gc

import pytest
from nameko.cli.run import import_service
from nameko.containers import ServiceContainer
from nameko.testing.utils import get_extension

from services.runtime.heap import StartupHeapFreeze
from tests.unit.test_service_modules import SERVICES


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_freezes_its_startup_heap(name):
    [service_class] = import_service(f"services.{name}.service")
    container = ServiceContainer(service_class, config={})
    assert get_extension(container, StartupHeapFreeze) is not None


def test_starting_freezes_what_exists_and_later_objects_are_still_collected():
    gc.unfreeze()
    try:
        StartupHeapFreeze().start()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the interpreter and every module imported so far

        class Cycle:
            pass

        cycle = Cycle()
        cycle.me = cycle  # type: ignore[attr-defined]
        del cycle
        assert gc.collect() >= 1  # made after the freeze: still found and freed
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
