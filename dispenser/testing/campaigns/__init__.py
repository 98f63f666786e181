"""Campaigns: long runs of the real processes that prove a property (crash, faults, fuzz,
edges, the day's load); ``bench/`` has their commands, ``tests/campaigns/`` their short
versions."""
