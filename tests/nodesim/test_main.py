"""``python -m nodesim``'s cluster list: the ids of a file, read again when the file changes."""

from __future__ import annotations

import os
from pathlib import Path

from nodesim.__main__ import ClusterList


def test_only_the_listed_clusters_are_booted_and_the_list_is_read_again_when_it_changes(
    tmp_path: Path,
) -> None:
    listed = tmp_path / "clusters"
    only = ClusterList(listed)
    assert not only("c-1")  # no file yet: nothing is ours
    listed.write_text("c-1\n\n")
    assert only("c-1")
    assert not only("c-2")
    listed.write_text("c-1\nc-2\n")
    stat = listed.stat()
    os.utime(listed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a change within one tick
    assert only("c-2")
