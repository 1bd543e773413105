"""Commands of the integrator's loop around the gateway (browse, probe, schema), above config and sources."""
