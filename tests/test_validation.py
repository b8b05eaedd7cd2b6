"""tritonops.validation.safe_load gives exactly what PyYAML's safe loader gives (values, types, errors).

Compared with the same loader class (libyaml's when present): its error wording differs from the
pure-Python one, and tritonops reports only the problem and its line and column anyway.
"""

from __future__ import annotations

import pytest
import yaml

from tritonops.validation import SafeLoader, safe_load

CASES = [
    "a: 1\nb: [1, 2.5, null, true, on, ~, 2020-01-01, 0x1F, .inf, -3, +4, '', \"\"]\nc: {x: y}\n",
    "a: &x 1\nb: *x\n",  # anchors and aliases: the full loader
    "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",  # merge key
    "<<: {a: 1}\n",
    "- a\n- {b: c}\n",
    "",
    "# only a comment\n",
    "x",
    'k: "1"\n',
    "? [a]\n: 1\n",  # a list as a key: ConstructorError, as before
    "--- a\n--- b\n",  # two documents: ComposerError, as before
    "!!str 1",
    'a: !!int "3"',
    "a: [\n",
    "a: b: c",
    "a:\n  - b\n  -\n  - c: \n",
    "1: 2\nnull: 3\n",
    "a: |\n  x\n  y\n",
    "x: 1_000\ny: 0o17\nz: 1e3\nw: 1.5e-3\n",
    "yes: no\nOn: Off\n",
    "dup: 1\ndup: 2\n",
    "models:\n  m-1: {regions: [eu-west-1], placement: on-demand}\n  m-2: {placement: pinned}\n",
    "t: 2001-12-14t21:59:43.10-05:00\n",
    "b: !!binary aGVsbG8=\n",
    "e: =\n",
]


def _result(fn: object, text: str) -> object:
    try:
        return fn(text)  # type: ignore[operator]
    except yaml.YAMLError as e:
        return (type(e).__name__, str(e))


@pytest.mark.parametrize("text", CASES)
def test_same_as_yaml_safe_load(text: str) -> None:
    want = _result(lambda t: yaml.load(t, Loader=SafeLoader), text)  # noqa: S506
    got = _result(safe_load, text)
    assert got == want
    assert repr(got) == repr(want)  # same types (True vs 1, date vs str)
