"""Releases: which published version is live per region (and per canary server), promote, rollback,
staged rollouts gated on Triton's own metrics."""
