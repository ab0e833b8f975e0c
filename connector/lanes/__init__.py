"""The two lanes: deferred (provider Batch APIs) and realtime (synchronous APIs)."""
