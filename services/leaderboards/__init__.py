"""The leaderboards service: boards per period and scope, ranks, period close, rebuild."""
