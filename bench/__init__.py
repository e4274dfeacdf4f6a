"""`make bench`: the portal measured at fleet scale against references taken in the same run.

Run with ``python -m bench`` (see ``python -m bench --help``); ``--smoke`` is the CI-sized run.
"""
