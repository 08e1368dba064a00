"""edgecal for test suites: the pytest plugin (:mod:`edgecal.testing.pytest_plugin`, registered
as the ``pytest11`` entry point ``edgecal``) -- on-device int8 regression checks written as
pytest tests, on a board by name, a labgrid place, or labgrid's own pytest target."""
