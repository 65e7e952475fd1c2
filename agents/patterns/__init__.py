"""Choreography patterns as reusable parts, with the bus's guarantees: inputs held until what
they produced is acknowledged, ids derived from inputs, deadlines that survive restarts.

- join.py: fan-in. A plan event names the parts to wait for; the parts arrive; the output is
  composed when all are in or when the plan's deadline passes (a partial result).
- loop.py: a bounded loop-back. A gate sends work back for another round at most N times;
  the round travels in the event.
- approval.py: a human-approval gate on any agent's proposed actions.
"""
