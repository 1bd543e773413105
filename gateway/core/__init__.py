"""The shared vocabulary of mw-gateway. Imports nothing else from `gateway`.

samples.py    Sample, Quality, Value, LinkState, SourceStats: what sources produce
firings.py    Firing, TaskSpec, Evidence, SparePart, Priority: what the engine produces
delivery.py   OutboxItem, Delivery, Outcome, NetworkInfo: what the dispatcher and backends exchange
webhooks.py   TaskUpdate, Movement, LedgerOps, Incoming, TaskClosed...: what webhooks say
ports.py      Source and Backend protocols (and the web side's views)
clock.py      Clock, SystemClock, ManualClock: time is an argument
durations.py  "5m" -> 300.0 and back
errors.py     the one error tree
backoff.py    exponential backoff with jitter
"""
