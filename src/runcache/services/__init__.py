"""The services: where requests meet the rules in `core` and the stores (`cache.py` for the cache
protocols, `management.py` for listing, deleting, usage and limits)."""
