"""A model's published config.pbtxt: what sync writes there, and how a published one is checked.

The published config is the local repository's config with its version_policy rewritten to
``specific`` over complete versions (see :mod:`tritonops.store.sync` for when it is written). The
version_policy is the release pointer (:mod:`tritonops.release`) and may name other versions than
the local policy would; everything else is what Triton loads every version with (batching, instance
groups, inputs, parameters), so it must equal the local config. The manifest records the sha256 of
the local config, never of the published one, so only a check against the local repository (``sync
--verify``) can see a config edited in the bucket, and ``sync --repair`` rewrites it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tritonops.errors import RepositoryError
from tritonops.fileio import sha256_bytes
from tritonops.repo.manifest import CONFIG_NAME, ModelManifest
from tritonops.store.base import ObjectStore

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

POLICY = "version_policy"


def published_config(
    config_text: str, versions: list[int], source: str, exact: list[int] | None = None
) -> bytes:
    """The local config with its version_policy rewritten to ``specific`` over ``versions``.

    The local policy is kept as intent: ``latest {k}`` keeps the k highest complete versions,
    ``specific`` keeps those of its list that are complete, ``all`` keeps every complete version.
    The result only ever names versions present in the bucket. ``exact``: the region's release
    pointer (tritonops.release), named as is instead of the local policy.
    """
    from tritonops.repo.model_config import config_to_text, live_versions, parse_config_text, set_specific_versions

    cfg = parse_config_text(config_text, source)
    keep = live_versions(cfg, versions) if exact is None else [n for n in sorted(exact) if n in set(versions)]
    set_specific_versions(cfg, keep)
    return config_to_text(cfg).encode()


def config_problem(
    store: ObjectStore, man: ModelManifest, local: tuple[str, str] | None = None
) -> str | None:
    """Why the model's published config.pbtxt is not one sync would have written, or None.

    Checked: present; its bytes equal their sha256 metadata; it parses; its version_policy is
    ``specific`` over published versions only; and, given ``local`` (the local config's text and
    path), every field but version_policy equals the local config's. Two requests (HEAD, GET)."""
    from tritonops.repo.model_config import parse_config_text

    key = f"{man.model}/{CONFIG_NAME}"
    where = f"{store.url}/{key}"
    info = store.head(key)
    data = store.get(key)
    if data is None or info is None:
        return f"{where}: missing"
    if info.sha256 is not None and info.sha256 != sha256_bytes(data):
        return f"{where}: bytes differ from their sha256 metadata"
    try:
        cfg = parse_config_text(data.decode("utf-8", "replace"), where)
    except RepositoryError as e:
        return str(e)
    if cfg.version_policy.WhichOneof("policy_choice") != "specific":
        return f"{where}: version_policy is not `specific` (sync always writes one)"
    if not set(cfg.version_policy.specific.versions) <= set(man.versions):
        return f"{where}: version_policy names versions that are not published"
    if local is not None:
        fields = differing_fields(parse_config_text(local[0], local[1]), cfg)
        if fields:
            return f"{where}: differs from {local[1]} in {', '.join(fields)}"
    return None


def differing_fields(a: model_config_pb2.ModelConfig, b: model_config_pb2.ModelConfig) -> list[str]:
    """Top-level fields whose values differ, version_policy aside, in the proto's field order. A
    message present but empty differs from one absent (``dynamic_batching {}`` turns batching on)."""
    have_a = {f.name: v for f, v in a.ListFields()}
    have_b = {f.name: v for f, v in b.ListFields()}
    return [
        f.name
        for f in a.DESCRIPTOR.fields
        if f.name != POLICY and (f.name in have_a, have_a.get(f.name)) != (f.name in have_b, have_b.get(f.name))
    ]
