"""The runtime: the parts that run the gateway (lifecycle, sample pipeline, reload, supervisor, dispatcher,
housekeeping). It may import core, engine, sources, cmms and store; web never imports it."""
