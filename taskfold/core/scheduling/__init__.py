"""The scheduler's pure core: what it remembers beyond the fold (`Fleet`), how it picks
agents (strategies), what it decides (`decide`), and what the clock ends (`expirations`).

No faust, no Kafka, no clock: `streams/` calls these with the time and the heartbeats.

* `fleet.observe(fleet, before, after, event, verdict, policy) -> Fleet`, and
  `fleet.replay(events, policy)` to rebuild (state, fleet) from a queue's log;
* `decide.decide(state, fleet, policy, *, queue, now_ms, heartbeats, pending, actor)`;
* `timers.expirations(state, fleet, policy, *, queue, now_ms, heartbeats, actor)`;
* `strategies.SCORERS`: the strategy registry; `model`: QueuePolicy, Fleet, AgentRecord, Session.

Nothing is re-exported here: `decide` would shadow its own module.
"""
