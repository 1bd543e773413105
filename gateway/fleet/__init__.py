"""The fleet: many gateways on one CMMS network, over NATS JetStream (docs/fleet.md).

Nothing here imports `nats` at module level except the modules that talk to the bus; `gateway.fleet.config`
is pure pydantic so gateway.yaml can be validated without the optional `fleet` extra installed.
"""
