import io
import stat
import tarfile
import zipfile

import pytest

from vicious.data import safe_extract


def add_file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar, name, target, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def test_good_zip_and_tar_extract(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("top/a.txt", "a")
        z.writestr("top/sub/b.txt", "b")
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_text() == "b"

    archive = tmp_path / "good.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_file(tar, "top/a.txt", b"a")
        add_link(tar, "top/link", "a.txt", tarfile.SYMTYPE)
        add_link(tar, "top/hard", "top/a.txt", tarfile.LNKTYPE)
    safe_extract(archive, tmp_path / "out2")
    assert (tmp_path / "out2" / "top" / "link").read_text() == "a"
    assert (tmp_path / "out2" / "top" / "hard").read_text() == "a"


@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/evil-abs.txt"])
def test_zip_escaping_member_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fine.txt", "ok")
        z.writestr(zipfile.ZipInfo(name), "evil")
    with pytest.raises(ValueError, match="refusing member") as error:
        safe_extract(archive, tmp_path / "out")
    assert repr(name) in str(error.value)
    assert not (tmp_path / "out" / "fine.txt").exists()  # nothing written
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_outside_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("escape")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(info, "../../etc")
    with pytest.raises(ValueError, match="'escape'.*symlink"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize(
    "member, target, kind, reason",
    [
        ("../evil.txt", None, None, "'..'"),
        ("/tmp/evil-abs.txt", None, None, "absolute"),
        ("link", "../../outside", tarfile.SYMTYPE, "symlink"),
        ("dir/link", "../..", tarfile.SYMTYPE, "symlink"),
        ("link", "/etc/passwd", tarfile.SYMTYPE, "absolute"),
        ("hard", "../outside.txt", tarfile.LNKTYPE, "hardlink"),
        ("dev", None, tarfile.CHRTYPE, "special"),
    ],
)
def test_tar_escaping_member_refused(tmp_path, member, target, kind, reason):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        add_file(tar, "fine.txt")
        if kind is None:
            add_file(tar, member, b"evil")
        elif kind == tarfile.CHRTYPE:
            info = tarfile.TarInfo(member)
            info.type = kind
            tar.addfile(info)
        else:
            add_link(tar, member, target, kind)
    with pytest.raises(ValueError, match=reason) as error:
        safe_extract(archive, tmp_path / "out")
    assert repr(member) in str(error.value)
    assert not (tmp_path / "out" / "fine.txt").exists()


def test_not_an_archive(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a zip or tar"):
        safe_extract(path, tmp_path / "out")
