"""Demand: requests per model over a window, read from the sources a platform team already has.

``settings`` is the per-region YAML section (``RegionConfig.demand`` in ``tritonops.config``); ``sources``
reads one source; ``read_demand`` combines them and falls back, per source, to the last demand it
read (persisted under the state dir), never to "no demand".
"""
