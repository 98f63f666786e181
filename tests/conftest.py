"""The suite's shared fixtures live next to the tests that use them (``conftest.py`` of
each folder); shared helpers are in ``dispenser.testing``."""
