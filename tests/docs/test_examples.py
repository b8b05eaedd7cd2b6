"""The documentation runs: every ```bash block of README.md and docs/*.md is executed for real, so the docs
cannot drift from the code (as sqlite-utils does with its documentation tests).

How a page runs (docs/development.md says the same, for whoever writes a page):
- its bash blocks run in order, in ONE bash process (`set -euo pipefail`), so a variable exported in one block
  (`export TRITONOPS_CONFIG=...`) holds in the next; a block that fails fails the test, naming page and line;
- the working directory is a fresh folder holding copies of `converters/` and `scripts/` (what the examples
  name, as from the repository root); `tritonops` is the venv's, importing this checkout;
- a page that needs servers starts them itself (`tritonops dev up --state-dir .tritonops/dev ...`), as a
  reader would; whatever stack a page leaves running is stopped afterwards (by `tritonops dev`'s recorded pids);
- an HTML comment on the line before a fence steers it: `<!-- docs-test: skip (why) -->` (only for what cannot
  run here: a GPU, a cloud account, a download; the reason is required), `<!-- docs-test: exit N -->` (the
  block must exit N; it runs in a subshell), `<!-- docs-test: config -->` (a yaml block that is a
  tritonops.yaml, or a part of one, checked by the config loader merged into a minimal valid file).
Other blocks are not run; yaml and json blocks must parse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tritonops.cli import app
from tritonops.config import parse_config
from tritonops.dev import stack

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*PAGES, ROOT / "bench" / "README.md", *sorted((ROOT / "bench" / "results").glob("*.md"))]
DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(?P<what>[a-z-]+)\s*(?P<arg>.*?)\s*-->$")
PAGE_TIMEOUT_S = 600  # pages took 40 s to 5 min each on a shared 2-CPU machine at load average 20-36


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    directive: str  # "", "skip", "exit", "config"
    arg: str

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text().split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*([\w.+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence.group(1)):
            j += 1
        prev = lines[start - 1].strip() if start > 0 else ""
        d = DIRECTIVE.match(prev)
        out.append(Block(page, start + 1, fence.group(2).lower(), "\n".join(lines[start + 1 : j]) + "\n",
                         d.group("what") if d else "", d.group("arg") if d else ""))
        i = j + 1
    return out


def _all_blocks() -> list[Block]:
    return [b for p in PAGES for b in blocks(p)]


def _script(page_blocks: list[Block]) -> str:
    """One bash script for a page; each block announces itself on stderr so a failure names its line."""
    parts = ["set -euo pipefail"]
    for b in page_blocks:
        parts.append(f"echo '### docs-test: {b.where}' >&2")
        if b.directive == "exit":
            want = int(b.arg)
            parts.append(f"set +e\n(\nset -euo pipefail\n{b.text})\nrc=$?\nset -e\n"
                         f"if [ $rc != {want} ]; then echo \"{b.where}: exit $rc, the page says {want}\" >&2; exit 99; fi")
        else:
            parts.append(b.text)
    parts.append("echo '### docs-test: end' >&2")
    return "\n".join(parts) + "\n"


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("bash", "sh", "shell") and b.directive != "skip"]


RUN_PAGES = [p for p in PAGES if _runnable(p)]


def _stop_stacks(root: Path) -> None:
    for state in root.rglob("state.json"):
        if (state.parent / "tritonops.yaml").exists():
            stack.down(state.parent)


@pytest.mark.slow
@pytest.mark.timeout(PAGE_TIMEOUT_S + 60)
@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_every_shell_example_runs(page: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for folder in ("converters", "scripts"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITONOPS_", "AWS_", "PYTEST_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        HOME=str(home),
        AWS_EC2_METADATA_DISABLED="true",
        NO_COLOR="1",
        COLUMNS="120",
    )
    script = work / "page.sh"
    script.write_text(_script(_runnable(page)))
    try:
        proc = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=PAGE_TIMEOUT_S)
    finally:
        _stop_stacks(tmp_path)  # the work folder and $HOME (the README's scratch folder)
    if proc.returncode != 0:
        started = re.findall(r"### docs-test: (\S+)", proc.stderr)
        where = started[-1] if started else str(page)
        pytest.fail(f"{where}: the example exits {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-3000:]}"
                    f"\n--- stderr (tail)\n{proc.stderr[-3000:]}")


def test_skipped_examples_say_why() -> None:
    """Few, honest skips: each names what it needs that this machine lacks."""
    skips = [b for b in _all_blocks() if b.directive == "skip"]
    for b in skips:
        assert re.fullmatch(r"\((.{8,})\)", b.arg), f"{b.where}: a skip needs its reason in parentheses"
    print("\n".join(f"skipped: {b.where} {b.arg}" for b in skips))
    assert len(skips) <= 6, [b.where for b in skips]


def test_directives_are_known_and_placed() -> None:
    for page in PAGES:
        lines = page.read_text().split("\n")
        for n, line in enumerate(lines):
            if not (line.startswith("<!--") and "docs-test" in line):
                continue
            d = DIRECTIVE.match(line.strip())
            assert d and d.group("what") in ("skip", "exit", "config"), f"{page}:{n + 1}: unknown directive"
            assert n + 1 < len(lines) and lines[n + 1].startswith("```"), f"{page}:{n + 1}: not before a fence"
            if d.group("what") == "exit":
                assert d.group("arg").isdigit(), f"{page}:{n + 1}: exit needs a number"


BASE_CONFIG: dict[str, Any] = {
    "format_version": 1,
    "repository": "model_repos/prod",
    "regions": {r: {"bucket": f"s3://acme-models-{r}/triton"} for r in ("eu-west-1", "us-east-1", "ap-south-1")},
}


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return extra


def test_yaml_and_json_examples_parse_and_configs_validate() -> None:
    checked = 0
    for b in _all_blocks():
        if b.lang in ("yaml", "yml"):
            data = yaml.safe_load(b.text)
            if b.directive == "config":
                assert isinstance(data, dict), b.where
                parse_config(_merge(BASE_CONFIG, data), Path(b.where))
                checked += 1
        elif b.lang == "json":
            json.loads(b.text)
    assert checked >= 3


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    in_fence = False
    for line in page.read_text().split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_relative_link_points_at_a_file() -> None:
    broken = []
    for page in LINKED:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_index_and_the_readme() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name == "README.md":
            continue
        assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def _readme_command_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    cmds = []
    for line in section.split("\n"):
        m = re.match(r"^\|\s*`tritonops ([a-z][a-z -]*?)`", line)
        if m:
            cmds.append(m.group(1).strip())
    return cmds


def test_every_command_in_the_readme_table_exists() -> None:
    cmds = _readme_command_table()
    assert len(cmds) >= 20, cmds
    runner = CliRunner()
    for cmd in cmds:
        res = runner.invoke(app, [*cmd.split(), "--help"])
        assert res.exit_code == 0, f"`tritonops {cmd} --help` exits {res.exit_code}: {res.output[-500:]}"


def test_the_readme_stays_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().split("\n")) <= 300
    # Every shell block really reached bash: a fence spelled `shell` or `console` would silently not run.
    for b in _all_blocks():
        assert b.lang not in ("console", "zsh"), f"{b.where}: use ```bash"


def test_the_page_runner_reports_a_failing_example(tmp_path: Path) -> None:
    """The runner itself can fail: a page whose example exits 1 is reported with its line."""
    page = tmp_path / "p.md"
    page.write_text("# p\n\n```bash\ntrue\n```\n\n<!-- docs-test: exit 2 -->\n```bash\nexit 2\n```\n\n```bash\nfalse\n```\n")
    bl = [b for b in blocks(page) if b.lang == "bash"]
    assert [b.directive for b in bl] == ["", "exit", ""]
    proc = subprocess.run(["bash", "-c", _script(bl)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert re.findall(r"### docs-test: (\S+)", proc.stderr)[-1].endswith(":12")
