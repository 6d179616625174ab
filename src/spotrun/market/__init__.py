"""The spot market: traces, a virtual-time simulator, policies, prices and checkpoint advice.

- `trace`: load, check and synthesize availability traces; the bundled ones by name.
- `policy`: the Policy / Observation / Decision interface the simulator and the controller share.
- `sim`: one job through one or more zones in virtual time; `sweep`: many runs and Table 3.
- `policies`: on-demand, greedy, Uniform Progress, the omniscient optimum, and `adaptive` (ours).
- `prices`: `lookup(provider, instance_type) -> (spot, on_demand)`, AWS spot history and scores.
- `advise`: Young/Daly checkpoint intervals and the expected saving of a job.
"""
