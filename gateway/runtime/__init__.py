"""The runtime: the long-running parts that wire the adapters together (lifecycle, sample pipeline, reload,
supervisor, dispatcher and its brakes, housekeeping). It may import core, engine, sources, cmms and store;
web never imports it."""
