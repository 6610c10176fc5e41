"""The README is a short front page whose test command is exactly what CI runs, and every docs page is in the site's
navigation (`mkdocs build --strict` in .ci/run checks links and the generated pages)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_is_a_front_page_whose_test_command_is_cis():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line
                   and not line.lstrip().startswith("#")]
    assert len(ci_commands) == 1
    assert f"```bash\n{ci_commands[0].strip()}\n```" in readme


def test_every_docs_page_is_in_the_navigation():
    nav = set(re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert pages == nav
    for link in re.findall(r"\]\(docs/([\w-]+\.md)\)", (ROOT / "README.md").read_text(encoding="utf-8")):
        assert link in pages, link
