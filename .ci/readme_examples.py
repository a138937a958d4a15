"""Prints the README's code blocks of one language that follow an `<!-- example -->` line, for
`.ci/check_install.sh` to run as written."""

from __future__ import annotations

import sys
from pathlib import Path


def examples(readme: str, language: str) -> list[str]:
    blocks, lines = [], readme.splitlines()
    for number, line in enumerate(lines):
        if line.strip() == "<!-- example -->" and lines[number + 1].strip() == f"```{language}":
            end = next(i for i in range(number + 2, len(lines)) if lines[i].strip() == "```")
            blocks.append("\n".join(lines[number + 2:end]))
    return blocks


if __name__ == "__main__":
    found = examples(Path(sys.argv[1]).read_text(), sys.argv[2])
    if not found:
        sys.exit(f"error: {sys.argv[1]} has no `<!-- example -->` block of {sys.argv[2]}")
    print("\n\n".join(found))
