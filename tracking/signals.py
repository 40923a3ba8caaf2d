"""What tracking tells the rest of the project, without importing it."""

from django.dispatch import Signal

# Sent on the event loop right after a batch of events committed, with
# key (ApiKeyInfo), events (the validated events), results (the database's
# answer per event) and xid (the recording transaction). Receivers must
# return at once and never raise: ingest does not wait for them.
events_recorded = Signal()
