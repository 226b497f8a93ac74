"""Rollouts: a pure judge and state machine (``analysis``, ``machine``) and the async
controller that gathers windows, persists states and applies weights (``controller``)."""
