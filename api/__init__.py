"""The JSON API's plumbing (api.http): apps' api.py modules build their endpoints with it."""
