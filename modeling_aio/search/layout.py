"""Where a gallery's person ids and cameras come from: a `--layout` (a dataset's naming or a regex) matched against
each image's path relative to the gallery folder, so ids in folder names (`val/018/01_3.jpg`) can be read too.

A regex names its groups `id` and `camera` (`(?P<id>\\d+)/(?P<camera>\\d+)_\\d+\\.jpg`), or groups 1 and 2 are id and
camera; a group `time` (ISO 8601, e.g. 20261201T140000) gives a database gallery its timestamps. A layout that
matches no image is an error, not a silent gallery without ids.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Named layouts: each dataset's file naming, found at any depth of the relative path.
LAYOUTS: dict[str, str] = {
    "market1501": r"(?:^|/)(?P<id>-?\d+)_c(?P<camera>\d)s\d[^/]*$",
    "dukemtmc-reid": r"(?:^|/)(?P<id>\d+)_c(?P<camera>\d+)_[^/]*$",
    "msmt17": r"(?:^|/)(?P<id>\d+)_\d+_(?P<camera>\d+)_[^/]*$",
    "pku-sketch": r"(?:^|/)(?P<id>\d+)_(?P<camera>\d+)_[^/]*$",
}


def compile_pattern(pattern: str, option: str) -> re.Pattern:
    """`pattern` (a name of LAYOUTS or a regex with at least one group) compiled; a clear error naming `option`."""
    try:
        compiled = re.compile(LAYOUTS.get(pattern, pattern))
    except re.error as error:
        raise ValueError(f"{option} {pattern!r} is not a valid regular expression: {error}.") from None
    if compiled.groups < 1:
        raise ValueError(f"{option} {pattern!r} has no group; put the person id in a group, e.g. '(\\d+)_'.")
    return compiled


def relative_path(path: str | Path, root: str | Path | None) -> str:
    """`path` relative to the gallery folder `root`, with `/` separators (the file name where it is not inside)."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def parse_ids(pattern: re.Pattern, relative: str) -> tuple[str | None, str | None]:
    """(person id, camera) that `pattern` finds in a relative path; None where it does not match or has no camera."""
    match = pattern.search(relative)
    if match is None:
        return None, None
    named = match.groupdict()
    person_id = named["id"] if "id" in named else match.group(1)
    if "camera" in named:
        return person_id, named["camera"]
    return person_id, match.group(2) if pattern.groups >= 2 and "id" not in named else None


def parse_time_group(pattern: re.Pattern, relative: str):
    """The datetime in the `time` group of `pattern` (ISO 8601 or compact, e.g. 20261201T140000), or None."""
    import datetime as dt

    match = pattern.search(relative)
    if match is None or "time" not in match.groupdict() or not match.group("time"):
        return None
    try:
        return dt.datetime.fromisoformat(match.group("time"))
    except ValueError:
        raise ValueError(f"--layout group time {match.group('time')!r} in {relative!r} is not an ISO 8601 date or "
                         "time (e.g. 2026-12-01T14:00 or 20261201T140000).") from None


def require_matches(pattern: re.Pattern, relatives: list[str], option: str, text: str) -> int:
    """How many of `relatives` `pattern` matches; a clear error when it matches none of them."""
    matched = sum(pattern.search(relative) is not None for relative in relatives)
    if relatives and matched == 0:
        examples = ", ".join(repr(r) for r in relatives[:3])
        raise ValueError(f"{option} {text!r} matched none of the {len(relatives)} paths it is searched in (each "
                         f"image's path relative to the gallery folder, e.g. {examples}).")
    return matched


__all__ = ["LAYOUTS", "compile_pattern", "relative_path", "parse_ids", "parse_time_group", "require_matches"]
