"""The change feed: every committed change of state and history, as events, exported.

Sources: the SQLite outbox (app/store/sqlite/outbox.py) and DynamoDB Streams. Sinks: an
S3 or local archive and a PostgreSQL analytics schema. ``orchestrator export`` runs it.
"""
