"""The change-request lifecycle shared by promotions and rollbacks (see changes/lifecycle.py)."""
