"""The project app has no models. This module exists because Django sends
post_migrate only to apps with a models module, and config installs every
app's SQL functions on it (config/sqlfunctions.py)."""
