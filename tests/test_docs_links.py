"""Every committed Markdown file links only inside the repository (issue 22): a clone has no ``../shared``.

Checked in each tracked ``.md``: Markdown link targets (``[text](target)``) that are not URLs must name an
existing file or folder of the repository; a ``../`` path must resolve, from the file's folder, to an
existing path inside the repository; and no absolute path names a ``.md`` document (it would be outside).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
PARENT_PATH = re.compile(r"(?<![\w/.])((?:\.\./)+[\w.\-/]*[\w\-])")
ABSOLUTE_DOC = re.compile(r"(?<![\w.:/])(/[\w.\-]+(?:/[\w.\-]+)*\.md)\b")
URL = re.compile(r"^[a-z][a-z0-9+.\-]*:", re.IGNORECASE)


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [REPO / name for name in listed]


def inside(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO) and path.exists()


def outside_links(md: Path, text: str | None = None) -> list[str]:
    """``file:line: target`` of every reference in ``md`` (or in ``text`` read as if it were ``md``) that
    leaves the repository or names nothing."""
    problems = []
    text = md.read_text(encoding="utf-8") if text is None else text
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{md.relative_to(REPO)}:{number}"
        for target in LINK.findall(line):
            if URL.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            resolved = REPO / path.lstrip("/") if path.startswith("/") else md.parent / path
            if not inside(resolved):
                problems.append(f"{where}: link ({target})")
        for target in PARENT_PATH.findall(line):
            if not inside(md.parent / target):
                problems.append(f"{where}: {target}")
        for target in ABSOLUTE_DOC.findall(line):
            problems.append(f"{where}: absolute path {target}")
    return problems


def test_no_markdown_file_links_outside_the_repository():
    files = markdown_files()
    assert REPO / "README.md" in files and REPO / "docs" / "data.md" in files
    problems = [p for md in files for p in outside_links(md)]
    assert not problems, (
        "references outside the repository (cite the source by name/URL instead):\n" + "\n".join(problems)
    )


def test_the_check_finds_each_kind():
    sample = REPO / "docs" / "sample.md"  # where the text is read as if it were; never written
    text = (
        "see `../shared/reference/goliath.md` and [spec](../../outside.md) and [ok](architecture.md)\n"
        "`/work/shared/reference/srhand_reference_code.md`, [web](https://github.com/yunminjin2/SRHand)\n"
        "[missing](nothing_here.md) [anchor](#layout) `../docs/data.md`\n"
    )
    found = [p.split(": ", 1)[1] for p in outside_links(sample, text)]
    assert found == [
        "link (../../outside.md)",
        "../shared/reference/goliath.md",
        "../../outside.md",
        "absolute path /work/shared/reference/srhand_reference_code.md",
        "link (nothing_here.md)",
    ], found
