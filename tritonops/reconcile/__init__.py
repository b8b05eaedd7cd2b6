"""Reconcile: make a region's Triton servers serve what its bucket publishes, within measured memory.

``state`` gathers desired and actual state, ``plan`` turns them into a pure, sorted, checksummed
Plan, ``apply`` executes it under ``lock`` with a ``journal``, ``metrics`` and a ``quarantine``.
"""
