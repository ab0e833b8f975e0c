"""Dead-letter tooling: ``batchbridge deadletters`` counts them, ``batchbridge replay`` re-sends.

- :mod:`~connector.deadletters.selection` (pure): filters, counts, and the replay plan —
  which dead letters have a whole original request, which were replayed before, which
  are superseded by a later dead letter of the same request;
- :mod:`~connector.deadletters.store` (broker I/O): reads the dead-letter and replays
  topics, produces the replayed requests and their markers.
"""

from connector.deadletters.selection import (
    REPLAY_OF,
    CountRow,
    DeadLetter,
    ReplayPlan,
    Selection,
    Tally,
    count,
    parse_time,
    plan_replay,
    refusal,
    replay_request,
    summary_of,
)
from connector.deadletters.store import read_deadletters, read_replayed, send_replays

__all__ = [
    "REPLAY_OF",
    "CountRow",
    "DeadLetter",
    "ReplayPlan",
    "Selection",
    "Tally",
    "count",
    "parse_time",
    "plan_replay",
    "read_deadletters",
    "read_replayed",
    "refusal",
    "replay_request",
    "send_replays",
    "summary_of",
]
