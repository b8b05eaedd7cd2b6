"""Requests find their model: a region's Envoy configuration built from what its servers serve.

``served`` reads which models each server holds READY (and at which version), ``render`` turns that
into Envoy clusters, routes and listeners (plain data, a pure function), ``envoy`` writes them into
the folder Envoy watches (atomic renames) and confirms through Envoy's admin that they were accepted,
and ``update`` ties the three together for ``tritonops route`` and reconcile. See docs/routing.md.
"""
