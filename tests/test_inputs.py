"""The entries ``fakeface`` answers for (helpers.inputs.input_entries): every kind of entry, under every kind of
folder named, listed by hand."""

from __future__ import annotations

import os

from helpers import inputs


def _tree(root):
    """A named folder holding one entry of every kind, and folders of other kinds beside it."""
    d = root / "D"
    for folder in ("sub", ".hid", "empty", "emptyparent/inner", "only_hidden"):
        (d / folder).mkdir(parents=True)
    for name in ("a.jpg", "sub/b.jpg", ".hidden.jpg", ".hid/c.jpg", "only_hidden/.x.jpg", "name with spaces.jpg"):
        (d / name).write_bytes(b"x")
    os.symlink("a.jpg", d / "link_file.jpg")
    os.symlink("sub", d / "link_dir")
    os.symlink("missing.jpg", d / "broken.jpg")
    os.mkfifo(d / "pipe")
    (root / ".cache" / "photos").mkdir(parents=True)  # a hidden folder, named on purpose
    (root / ".cache" / "photos" / "p.jpg").write_bytes(b"x")
    (root / "E").mkdir()  # an empty folder, named
    os.symlink("D", root / "linked_D")  # a link to a folder, named
    return d


def test_every_kind_of_entry_under_every_kind_of_folder(tmp_path, monkeypatch):
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    entries, reasons = inputs.input_entries(["D", ".cache/photos", "E", "linked_D/sub", "nothere.jpg", "D/a.jpg"])
    expected = {  # entry -> reason ("" : handed to the loader, which scores it or says why not)
        "D/.hid/c.jpg": inputs.HIDDEN, "D/.hidden.jpg": inputs.HIDDEN, "D/a.jpg": "", "D/broken.jpg": "",
        "D/empty": inputs.EMPTY_FOLDER, "D/emptyparent/inner": inputs.EMPTY_FOLDER, "D/link_dir": inputs.LINKED_FOLDER,
        "D/link_file.jpg": "", "D/name with spaces.jpg": "", "D/only_hidden/.x.jpg": inputs.HIDDEN, "D/pipe": "",
        "D/sub/b.jpg": "",
        ".cache/photos/p.jpg": "",        # inside a hidden folder the user named: not hidden to them
        "E": inputs.EMPTY_FOLDER,         # an empty folder named: one row
        "linked_D/sub/b.jpg": "",         # a folder named through a link: followed, as named
        "nothere.jpg": "",                # a missing file: the loader says so
    }
    listed = [str(p) for p in entries]
    assert sorted(set(listed)) == sorted(expected)
    assert listed.count("D/a.jpg") == 2  # named twice (inside D and alone): answered twice, once per mention
    assert {str(p): r for p, r in reasons.items()} == {k: v for k, v in expected.items() if v}
    assert [str(p) for p in inputs.image_files(["D"])] == \
        sorted(k for k, v in expected.items() if k.startswith("D/") and not v)


def test_a_link_to_a_folder_inside_a_named_folder_is_not_followed(tmp_path):
    """Following links inside a folder could loop (a link to a parent) or leave the folder named; the link gets a
    row saying so, and the folder it points to is scored when named."""
    d = tmp_path / "loop"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"x")
    os.symlink("..", d / "parent")
    entries, reasons = inputs.input_entries([d])
    assert entries == [d / "a.jpg", d / "parent"] and reasons == {d / "parent": inputs.LINKED_FOLDER}
