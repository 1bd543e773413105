"""The rule engine: rule schema, loader, triggers, the pure Engine, templates and rule tests."""
