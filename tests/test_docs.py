"""The documentation holds: every relative link resolves (files and ``#anchors`` of markdown
headings), the README stays short and its quick start runs as written, no page speaks of trackers,
and the CPU multi-process command shown is one that starts several processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "benchmarks" / "results" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _code_free(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file (lower case, punctuation dropped,
    spaces to hyphens, ``-1``, ``-2``... for repeated headings)."""
    seen: dict[str, int] = {}
    found = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower().replace("`", "")).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [a or b for a, b in LINK.findall(_code_free(path.read_text()))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved.relative_to(REPO) if REPO in resolved.parents else resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}:\n" + "\n".join(broken)


def test_readme_is_short_and_keeps_its_two_setup_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for marker in ("<!-- setup:run -->", "<!-- setup:test -->", "<!-- quickstart -->"):
        assert text.count(marker) == 1, marker


def quickstart_code() -> str:
    """The fenced Python block after ``<!-- quickstart -->`` in README.md."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\s*```python\n(.*?)^```", text, flags=re.S | re.M)
    assert block, "README.md has no ```python block after <!-- quickstart -->"
    return block.group(1)


def test_readme_quick_start_runs_as_written(tmp_path):
    code = quickstart_code()
    assert 5 <= len(code.strip().splitlines()) <= 15
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("LEARNGENE_HF_DEFER_MODELS", None)
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout


def test_no_page_or_file_speaks_of_trackers():
    tracker = re.compile(r"\bissues? #?\d+|\bthe issue('s)?\b|\bdevelopment session\b", re.I)
    files = [*PAGES, REPO / "CHANGELOG.md", *REPO.glob("benchmarks/**/*.md"), *REPO.glob("model_cards/*.md")]
    files += [*REPO.glob("learngene_hf/**/*.py"), *REPO.glob("examples/*.py"), *REPO.glob("benchmarks/*.py")]
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()[:80]}"
        for path in sorted(set(files))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if tracker.search(line)
    ]
    assert not found, "\n".join(found)


def test_cpu_multi_process_commands_start_several_processes():
    """``accelerate launch --cpu --num_processes N`` starts one process; the commands the pages
    show to run start N (``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N``)."""
    commands = [
        (page, line)
        for page in PAGES
        for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", page.read_text(), flags=re.S | re.M)
        for line in block.splitlines()
    ]
    bad = [
        f"{page.relative_to(REPO)}: {line.strip()}"
        for page, line in commands
        if "accelerate launch" in line and "--num_processes" in line and "--multi_gpu" not in line
    ]
    assert not bad, "\n".join(bad)
    readme = (REPO / "README.md").read_text()
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2" in readme


def test_api_reference_lists_every_public_name():
    import learngene_hf

    listed = set(re.findall(r"`([A-Za-z_]\w*)`", (REPO / "docs" / "api.md").read_text()))
    missing = sorted(set(learngene_hf.__all__) - listed)
    assert not missing, f"docs/api.md does not list {missing}"
