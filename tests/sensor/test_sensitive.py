"""The sensitive path list."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.errors import SensorError
from assay.sensor import DEFAULT_SENSITIVE_PATHS, compile_paths
from assay.sensor._sensitive import SENS_DIR, SENS_FILE, load_path_list


def test_absolute_paths_become_inodes_and_patterns_names(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("x")
    d = tmp_path / "vault"
    d.mkdir()
    s = compile_paths(
        [str(f), str(d) + "/", "*/.ssh/", "*/.aws/credentials", "*/.netrc", str(tmp_path / "gone")]
    )
    st, dt = f.stat(), d.stat()
    assert s.inodes[(st.st_dev, st.st_ino)] == SENS_FILE
    assert s.inodes[(dt.st_dev, dt.st_ino)] == SENS_DIR
    assert s.names == {(".ssh", ""), (".aws", "credentials"), ("", ".netrc")}
    link = tmp_path / "alias"
    link.symlink_to(f)
    assert s.matches(str(link))  # by inode, whatever the name
    assert s.matches("/home/x/.ssh/id_rsa") and s.matches("/nowhere/.aws/credentials")
    assert not s.matches("/nowhere/.aws/config")


def test_defaults_compile() -> None:
    assert compile_paths(DEFAULT_SENSITIVE_PATHS).names


@pytest.mark.parametrize("bad", ["relative/path", "*/a/b/c", "*/" + "n" * 40, "*/*.key"])
def test_bad_entries_are_refused(bad: str) -> None:
    with pytest.raises(SensorError, match="sensitive path entry"):
        compile_paths([bad])


def test_path_list_file_errors_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "paths.txt"
    p.write_text("# comment\n/etc/shadow\nnot/absolute\n")
    with pytest.raises(SensorError, match=r"paths.txt:3"):
        load_path_list(str(p))
