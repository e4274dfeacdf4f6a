"""Clients for the systems the portal observes and changes: Argo CD, forges and Git.

No Django models or views here, and nothing imports Django settings: callers pass configuration in.
"""
