"""Reading what a region publishes: index, manifests, configs; cache by digest; corrupt manifests."""

from __future__ import annotations

from pathlib import Path

from tritonops.config import RegionConfig, parse_config
from tritonops.fileio import atomic_write_bytes, sha256_bytes
from tritonops.reconcile.ports import SizeGuess
from tritonops.reconcile.state import desired_state, read_published
from tritonops.repo.manifest import FileEntry, ModelManifest, RepoIndex, VersionEntry


def publish(root: Path, model: str, versions: list[int]) -> ModelManifest:
    man = ModelManifest(model)
    for v in versions:
        data = f"{model} v{v}".encode()
        (root / model / str(v)).mkdir(parents=True, exist_ok=True)
        (root / model / str(v) / "model.py").write_bytes(data)
        man.versions[v] = VersionEntry(v, [FileEntry("model.py", len(data), sha256_bytes(data))])
    config = b'backend: "python"\n'
    man.config_sha256 = sha256_bytes(config)
    atomic_write_bytes(root / model / "config.pbtxt", config)
    man.save(root / model / "tritonops-manifest.json")
    return man


def write_index(root: Path, mans: list[ModelManifest]) -> None:
    atomic_write_bytes(root / "tritonops-index.json", RepoIndex.from_manifests(mans).dumps())


def test_latest_version_is_desired_and_residency_is_applied(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    mans = [publish(root, "a", [1, 2]), publish(root, "eu", [1])]
    write_index(root, mans)
    cfg = parse_config(
        {
            "regions": {
                "us": {
                    "bucket": f"file://{root}",
                    "servers": [{"name": "s", "http_url": "http://127.0.0.1:1"}],
                },
                "eu": {"bucket": f"file://{tmp_path / 'other'}"},
            },
            "models": {"eu": {"regions": ["eu"]}},
        }
    )
    pub = read_published(cfg.region("us"), "us")
    d = desired_state(cfg, "us", pub, SizeGuess())
    assert {m: (dm.version, dm.digest) for m, dm in d.models.items()} == {
        "a": (2, mans[0].versions[2].digest)
    }
    assert d.servers["s"].models == ["a"]
    assert any("'eu'" in p and "not allowed" in p for p in d.problems)


def test_cache_by_digest_skips_reads_and_a_corrupt_manifest_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    mans = [publish(root, "a", [1]), publish(root, "b", [1])]
    write_index(root, mans)
    rcfg = RegionConfig(bucket=f"file://{root}")
    cache = tmp_path / "cache"
    first = read_published(rcfg, "r", cache_dir=cache)
    assert sorted(first.manifests) == ["a", "b"] and first.problems == []
    # unchanged digest: served from the cache even if the bucket copy became unreadable
    (root / "a" / "tritonops-manifest.json").write_text("{garbage")
    assert sorted(read_published(rcfg, "r", cache_dir=cache).manifests) == ["a", "b"]
    # a new digest is read from the bucket; a corrupt one is reported, not raised, and the model held
    mans[0] = publish(root, "a", [1, 2])
    write_index(root, mans)
    (root / "a" / "tritonops-manifest.json").write_text("{garbage")
    pub = read_published(rcfg, "r", cache_dir=cache)
    assert sorted(pub.manifests) == ["b"]
    assert len(pub.problems) == 1 and "'a'" in pub.problems[0] and "not valid JSON" in pub.problems[0]


# Damage to one model's published objects, and what the reader must say about that model alone.
DAMAGE = {
    "manifest-missing": (lambda root, m: (root / m / "tritonops-manifest.json").unlink(), "missing"),
    "config-missing": (lambda root, m: (root / m / "config.pbtxt").unlink(), "config.pbtxt missing"),
    "manifest-garbage": (lambda root, m: (root / m / "tritonops-manifest.json").write_text("{garbage"), "not valid JSON"),
    "manifest-of-another-publish": (lambda root, m: publish(root, m, [1, 2]), "digest differs from the index"),
    "config-not-utf8": (lambda root, m: (root / m / "config.pbtxt").write_bytes(b"\xff\xfe"), "utf-8"),
}


def test_a_cold_read_of_many_models_reports_each_damaged_one_and_caches_only_the_good(tmp_path: Path) -> None:
    """More models than the reader fetches at once, a few damaged: each damaged model is reported once, in
    model order, naming its own fault; every other model is read, and only those are cached."""
    root = tmp_path / "bucket"
    mans = [publish(root, f"m{i:02d}", [1]) for i in range(40)]
    write_index(root, mans)
    damaged = {f"m{3 + 7 * i:02d}": kind for i, kind in enumerate(DAMAGE)}
    for model, kind in damaged.items():
        DAMAGE[kind][0](root, model)
    rcfg = RegionConfig(bucket=f"file://{root}")
    cache = tmp_path / "cache"

    pub = read_published(rcfg, "r", cache_dir=cache)

    good = sorted(m.model for m in mans if m.model not in damaged)
    assert sorted(pub.manifests) == sorted(pub.configs) == good
    assert all(pub.manifests[m].digest == mans[int(m[1:])].digest for m in good)
    assert len(pub.problems) == len(damaged)
    for line, (model, kind) in zip(pub.problems, sorted(damaged.items()), strict=True):
        assert f"model {model!r}" in line and DAMAGE[kind][1] in line, (kind, line)
    assert sorted(p.stem for p in cache.glob("*.json")) == good
    # the damage stays reported on the next run: nothing damaged was cached
    again = read_published(rcfg, "r", cache_dir=cache)
    assert again.problems == pub.problems and sorted(again.manifests) == good
