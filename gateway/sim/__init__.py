"""Simulators for the demo and the tests: the Mobility Work API (`mobility_work`), and others beside it."""
