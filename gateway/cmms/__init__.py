"""CMMS backends. `build_backend(config)` imports only the configured one."""
