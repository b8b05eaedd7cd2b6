"""A model's published config.pbtxt edited in the bucket: `sync --verify` refuses it, `sync --repair`
rewrites it with the release pointer it had, and edits that change nothing Triton loads are left alone.

Real moto S3 and the real CLI; the bucket is edited through a plain S3 client, as a user with bucket
access (or another tool) would.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import yaml
from typer.testing import CliRunner

from tests.store.conftest import Env, model_py, write_model
from tritonops.cli import app
from tritonops.fileio import sha256_file
from tritonops.release.policy import config_pointer
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest, write_index
from tritonops.repo.model_config import config_to_text, parse_config_text, set_specific_versions

EU = "eu-west-1"
KEY = "{m}/config.pbtxt"


def _cli(env: Env, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["--config", str(env.config_path), *args])
    return res.exit_code, res.stdout, res.stderr


def _edit(env: Env, m: str, published: bytes, change: Callable) -> None:
    cfg = parse_config_text(published.decode(), m)
    change(cfg)
    env.put(KEY.format(m=m), config_to_text(cfg).encode())  # no tritonops metadata, as `aws s3 cp` writes


def batch(env: Env, m: str, pub: bytes) -> None:
    _edit(env, m, pub, lambda c: setattr(c, "max_batch_size", 64))


def instances(env: Env, m: str, pub: bytes) -> None:
    _edit(env, m, pub, lambda c: setattr(c.instance_group[0], "count", 8))


def parameters(env: Env, m: str, pub: bytes) -> None:
    _edit(env, m, pub, lambda c: c.parameters["EXECUTION_ENV_PATH"].__setattr__("string_value", "/tmp/x.tar.gz"))


def inputs_and_batching(env: Env, m: str, pub: bytes) -> None:
    def change(c):  # noqa: ANN001 - a ModelConfig
        c.input[0].dims[0] = 5
        c.dynamic_batching.SetInParent()

    _edit(env, m, pub, change)


def deleted(env: Env, m: str, pub: bytes) -> None:
    rc = env.config.region(EU)
    env.client().delete_object(Bucket=rc.bucket_name, Key=f"{rc.prefix}/{KEY.format(m=m)}")


def latest_policy(env: Env, m: str, pub: bytes) -> None:
    _edit(env, m, pub, lambda c: c.version_policy.latest.__setattr__("num_versions", 1))


def unpublished_version(env: Env, m: str, pub: bytes) -> None:
    _edit(env, m, pub, lambda c: set_specific_versions(c, [1, 2, 9]))


def garbage(env: Env, m: str, pub: bytes) -> None:
    env.put(KEY.format(m=m), b"max_batch_size: {\n")


def forged(env: Env, m: str, pub: bytes) -> None:
    """Other bytes under the sha256 metadata of the real object."""
    rc = env.config.region(EU)
    key = f"{rc.prefix}/{KEY.format(m=m)}"
    meta = env.client().head_object(Bucket=rc.bucket_name, Key=key)["Metadata"]
    env.client().put_object(Bucket=rc.bucket_name, Key=key, Body=pub.replace(b"8", b"9"), Metadata=meta)


# Edits that change nothing a server loads: not reported, not rewritten.
def reformatted(env: Env, m: str, pub: bytes) -> None:
    text = "# edited by hand\n" + pub.decode().replace("\n", "\n\n").replace(": ", ":   ")
    assert parse_config_text(text, m) == parse_config_text(pub.decode(), m)
    env.put(KEY.format(m=m), text.encode())


def pointer_moved(env: Env, m: str, pub: bytes) -> None:
    """What a rollback does to the pointer: the release's, never a content change."""
    _edit(env, m, pub, lambda c: set_specific_versions(c, [1]))


# (edit, what the one-line report says of it; None: not a problem)
CASES: list[tuple[Callable[[Env, str, bytes], None], str | None]] = [
    (batch, "{url}: differs from {local} in max_batch_size"),
    (instances, "{url}: differs from {local} in instance_group"),
    (parameters, "{url}: differs from {local} in parameters"),
    (inputs_and_batching, "{url}: differs from {local} in input, dynamic_batching"),
    (deleted, "{url}: missing"),
    (latest_policy, "{url}: version_policy is not `specific`"),
    (unpublished_version, "{url}: version_policy names versions that are not published"),
    (garbage, "{url}:1: invalid config.pbtxt"),
    (forged, "{url}: bytes differ from their sha256 metadata"),
    (reformatted, None),
    (pointer_moved, None),
]


def test_a_config_edited_in_the_bucket_is_refused_by_verify_and_rewritten_by_repair(env: Env, unique) -> None:
    models = {edit.__name__: unique(edit.__name__.replace("_", "-")) for edit, _ in CASES}
    for m in models.values():
        write_model(env.repo, m, {1: {"model.py": model_py(1.0)}, 2: {"model.py": model_py(2.0)}})
    code, out, err = _cli(env, "sync", "-r", EU, "--verify")
    assert code == 0, err
    published = env.keys(EU)
    url = f"{env.config.region(EU).bucket}"
    expect: dict[str, str] = {}
    for edit, says in CASES:
        m = models[edit.__name__]
        key = KEY.format(m=m)
        assert config_pointer(published[key].decode()) == [1, 2]
        edit(env, m, published[key])
        if says is not None:
            expect[m] = says.format(local=env.repo / m / "config.pbtxt", url=f"{url}/{key}")
    edited = env.keys(EU)

    # verify: one line, exit 1, naming the first problem and counting the rest.
    code, out, err = _cli(env, "sync", "-r", EU, "--verify")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    first = min(expect)  # models are checked in name order
    assert err.startswith(f"error: verify failed: {expect[first]}") and f"(and {len(expect) - 1} more)" in err, err

    # repair --dry-run: every problem reported, nothing written.
    code, out, err = _cli(env, "sync", "-r", EU, "--repair", "--dry-run", "-o", "json")
    assert code == 0, err
    found = json.loads(out)["repair"]["found"]
    assert len(found) == len(expect), found
    for m, says in expect.items():
        assert sum(1 for line in found if line.startswith(says)) == 1, (m, says, found)
    assert env.keys(EU) == edited

    # repair: each one rewritten to what sync wrote (its pointer too); the harmless edits stay.
    code, out, err = _cli(env, "sync", "-r", EU, "--repair", "-o", "json")
    assert code == 0, err
    rep = json.loads(out)["repair"]
    assert sorted(rep["uploaded"]) == sorted(KEY.format(m=m) for m in expect) and rep["deleted"] == [], rep
    after = env.keys(EU)
    for edit, says in CASES:
        key = KEY.format(m=models[edit.__name__])
        assert after[key] == (published[key] if says is not None else edited[key]), edit.__name__
    assert _cli(env, "sync", "-r", EU, "--verify")[0] == 0
    code, out, err = _cli(env, "sync", "-r", EU, "--repair", "-o", "json")
    assert code == 0 and json.loads(out)["repair"]["found"] == [], out


def test_repair_keeps_the_pointer_the_bucket_holds_in_explicit_mode(env: Env, unique) -> None:
    """Explicit releases without a record: the config's pointer is the release; a repair of its body keeps it."""
    m = unique("explicit")
    write_model(env.repo, m, {1: {"model.py": model_py(1.0)}, 2: {"model.py": model_py(2.0)}})
    assert _cli(env, "sync", "-r", EU)[0] == 0
    pub = env.keys(EU)[KEY.format(m=m)]

    def change(c):  # noqa: ANN001 - a ModelConfig
        set_specific_versions(c, [1])
        c.max_batch_size = 2

    _edit(env, m, pub, change)
    data = yaml.safe_load(env.config_path.read_text())
    data["release"]["mode"] = "explicit"
    env.config_path.write_text(yaml.safe_dump(data))
    code, out, err = _cli(env, "sync", "-r", EU, "--repair", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["repair"]["uploaded"] == [KEY.format(m=m)]
    fixed = env.keys(EU)[KEY.format(m=m)].decode()
    assert config_pointer(fixed) == [1] and parse_config_text(fixed, m).max_batch_size == 8


def test_a_local_config_change_not_synced_yet_is_neither_a_failure_nor_repaired(env: Env, unique) -> None:
    """`sync --model X --verify/--repair` while model Y's local config has a change not published yet:
    the bucket's config of Y is what Y's published manifest says, so it is neither refused nor rewritten."""
    x, y = unique("x"), unique("y")
    for m in (x, y):
        write_model(env.repo, m, {1: {"model.py": model_py(1.0)}})
    assert _cli(env, "sync", "-r", EU)[0] == 0
    before = env.keys(EU)[KEY.format(m=y)]
    conf = env.repo / y / "config.pbtxt"
    conf.write_text(conf.read_text().replace("max_batch_size: 8", "max_batch_size: 16"))
    man = ModelManifest.load(env.repo / y / MANIFEST_NAME)
    man.config_sha256 = sha256_file(conf)  # as `repo add` records a new config
    man.save(env.repo / y / MANIFEST_NAME)
    write_index(env.repo)
    for extra in (["--verify"], ["--repair", "--verify"]):
        code, out, err = _cli(env, "sync", "-r", EU, "--model", x, *extra)
        assert code == 0, (extra, err)
        assert env.keys(EU)[KEY.format(m=y)] == before
    # Nor does a dry run of the sync that will publish it call it a repair.
    code, out, err = _cli(env, "sync", "-r", EU, "--repair", "--dry-run", "-o", "json")
    assert code == 0 and json.loads(out)["repair"]["found"] == [] and json.loads(out)["models_published"] == [y], out
    assert _cli(env, "sync", "-r", EU, "--verify")[0] == 0  # and a sync publishes it
    assert parse_config_text(env.keys(EU)[KEY.format(m=y)].decode(), y).max_batch_size == 16


def test_what_sync_publishes_never_differs_from_its_source_across_the_triton_rules_corpus() -> None:
    """Every config of the Triton-rules corpus (ensembles, sequence batching, batch inputs, reshapes,
    TensorRT and ONNX configs, rejected ones too): the published form, policy aside, has no field
    that differs from its source, so --verify raises nothing on what sync itself wrote; and one
    change to any of them is named."""
    from tests.repo.triton_rules_corpus import CASES as RULES
    from tritonops.errors import RepositoryError
    from tritonops.store.pubconfig import differing_fields, published_config

    texts = {f"{c.id}/{m}": t for c in RULES for m, t in c.models.items()}
    checked = 0
    for where, text in sorted(texts.items()):
        try:
            source = parse_config_text(text, where)
        except RepositoryError:
            continue  # text Triton's parser refuses too: never published
        published = parse_config_text(published_config(text, [1, 2, 3], where).decode(), where)
        assert differing_fields(source, published) == [], where
        published.max_batch_size += 1
        assert differing_fields(source, published) == ["max_batch_size"], where
        checked += 1
    assert checked >= 390, checked  # 397 configs in the corpus; 396 parse
