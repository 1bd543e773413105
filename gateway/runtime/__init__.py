"""The runtime: the long-running parts that wire the adapters together (lifecycle, sample pipeline, reload,
dispatcher and its brakes, housekeeping). It may import core, engine, sources, cmms and store."""
