"""collect_sources: folders, single files, CSV and text lists, duplicate and missing inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from freezeframe.errors import InputError
from freezeframe.extract.sources import VideoSource, collect_sources


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # content does not matter: sources never open files
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "videos"
    for rel in ("a.mp4", "b.AVI", "sub/c.mp4", "sub/deeper/d.mkv", "sub/deeper/e.webm", "other/f.mov",
                "notes.txt", "sub/readme.md", "sub/image.png"):
        _touch(root / rel)
    (root / "empty_dir").mkdir()
    return root


def test_folder_is_searched_recursively(tree):
    sources = collect_sources([tree])
    assert [s.video_id for s in sources] == ["a", "b", "other/f", "sub/c", "sub/deeper/d", "sub/deeper/e"]
    by_id = {s.video_id: s.path for s in sources}
    assert by_id["sub/deeper/d"] == str(tree / "sub" / "deeper" / "d.mkv")
    assert by_id["b"] == str(tree / "b.AVI")
    assert all(isinstance(s, VideoSource) for s in sources)
    assert all(Path(s.path).is_file() for s in sources)


def test_folder_named_like_a_video_is_kept_as_a_source(tree):
    """It fails later with a recorded reason instead of silently vanishing; its contents are not scanned."""
    _touch(tree / "x.mp4" / "inside.mp4")
    ids = [s.video_id for s in collect_sources([tree])]
    assert "x" in ids
    assert "x/inside" not in ids


def test_single_files(tmp_path, tree):
    sources = collect_sources([tree / "sub" / "c.mp4", tree / "sub" / "deeper" / "d.mkv"])
    assert sources == [VideoSource("c", str(tree / "sub" / "c.mp4")),
                       VideoSource("d", str(tree / "sub" / "deeper" / "d.mkv"))]


def test_unicode_and_spaces_in_ids(tmp_path):
    folder = tmp_path / "in"
    _touch(folder / "vidéo à tester ✓.mp4")
    _touch(folder / "sous dossier" / "clip 01.mp4")
    assert [s.video_id for s in collect_sources([folder])] == ["sous dossier/clip 01", "vidéo à tester ✓"]


def test_csv_list_with_ids_resolves_relative_paths_against_its_folder(tmp_path, tree, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    absolute = tree / "sub" / "c.mp4"
    (lists / "videos.csv").write_text(
        "video_id,path\n"
        "first,../videos/a.mp4\n"
        "second,../videos/sub/deeper/d.mkv\n"
        f"third,{absolute}\n"
        "\n"
        "# a comment line\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tree)  # the working directory must not matter
    sources = collect_sources([lists / "videos.csv"])
    assert [s.video_id for s in sources] == ["first", "second", "third"]
    assert Path(sources[0].path).resolve() == (tree / "a.mp4").resolve()
    assert Path(sources[1].path).resolve() == (tree / "sub" / "deeper" / "d.mkv").resolve()
    assert sources[2].path == str(absolute)


def test_csv_list_without_id_column_uses_the_relative_path(tmp_path, tree):
    (tree / "list.csv").write_text("path\nsub/c.mp4\nsub/deeper/e.webm\n", encoding="utf-8")
    sources = collect_sources([tree / "list.csv"])
    assert [(s.video_id, s.path) for s in sources] == [
        ("sub/c", str(tree / "sub" / "c.mp4")), ("sub/deeper/e", str(tree / "sub" / "deeper" / "e.webm"))]


def test_csv_list_with_bom_and_spaces(tmp_path, tree):
    (tree / "list.csv").write_text("\ufeffvideo_id , path\n clip , a.mp4 \n", encoding="utf-8")
    assert collect_sources([tree / "list.csv"]) == [VideoSource("clip", str(tree / "a.mp4"))]


def test_csv_list_needs_a_path_column(tmp_path):
    (tmp_path / "list.csv").write_text("video_id,file\nx,a.mp4\n", encoding="utf-8")
    with pytest.raises(InputError, match="'path' column"):
        collect_sources([tmp_path / "list.csv"])


def test_text_list_one_path_a_line(tmp_path, tree, monkeypatch):
    (tree / "list.txt").write_text("a.mp4\nsub/deeper/d.mkv\n\n# skipped\nother/f.mov\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    sources = collect_sources([tree / "list.txt"])
    assert [(s.video_id, s.path) for s in sources] == [
        ("a", str(tree / "a.mp4")), ("sub/deeper/d", str(tree / "sub" / "deeper" / "d.mkv")),
        ("other/f", str(tree / "other" / "f.mov"))]


@pytest.mark.parametrize("folder", ["lists", "."])
def test_text_list_lines_mean_what_pathlib_makes_of_them(tmp_path, monkeypatch, folder):
    lines = ["a.mp4", "dir/b.mp4", "dir/c", "x/.hidden", ".hidden", "a/../b.mp4", "d.tar.gz", "dir/e.", "f..mp4",
             "ü/ñ.webm", "a\\b.mp4", "..", "a/..", "./x.mp4", "x//y.mp4", "z/./y.mp4", "v/", "w/.", ".x/y", "a/.b"]
    monkeypatch.chdir(tmp_path)
    listing = Path(folder) / "videos.txt"
    listing.parent.mkdir(exist_ok=True)
    listing.write_text("\n".join(lines) + "\n")
    expected = []
    for line in lines:  # the meaning of a line, spelled with pathlib (the list reader skips it for plain lines)
        raw = Path(line)
        expected.append(VideoSource(str(raw.with_suffix("")) if raw.suffix else str(raw), str(listing.parent / raw)))
    assert collect_sources([listing]) == expected


def test_text_list_absolute_path_inside_its_folder(tmp_path, tree):
    (tree / "list.txt").write_text(f"{tree / 'sub' / 'c.mp4'}\n", encoding="utf-8")
    assert collect_sources([tree / "list.txt"]) == [VideoSource("sub/c", str(tree / "sub" / "c.mp4"))]


def test_inputs_combine_in_order(tmp_path, tree):
    (tmp_path / "list.txt").write_text("videos/other/f.mov\n", encoding="utf-8")
    sources = collect_sources([tree / "sub", tmp_path / "list.txt", tree / "a.mp4"])
    assert [s.video_id for s in sources] == ["c", "deeper/d", "deeper/e", "videos/other/f", "a"]


def test_duplicate_ids_across_folders_name_both_paths(tmp_path):
    first = _touch(tmp_path / "one" / "clip.mp4")
    second = _touch(tmp_path / "two" / "clip.avi")
    with pytest.raises(InputError) as error:
        collect_sources([tmp_path / "one", tmp_path / "two"])
    message = str(error.value)
    assert "'clip'" in message
    assert str(first) in message and str(second) in message


def test_duplicate_ids_in_one_folder_differ_only_by_extension(tmp_path):
    first = _touch(tmp_path / "v" / "clip.avi")
    second = _touch(tmp_path / "v" / "clip.mp4")
    with pytest.raises(InputError) as error:
        collect_sources([tmp_path / "v"])
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_duplicate_ids_in_a_csv_list(tmp_path, tree):
    (tree / "list.csv").write_text("video_id,path\nsame,a.mp4\nsame,sub/c.mp4\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate video id 'same'") as error:
        collect_sources([tree / "list.csv"])
    assert str(tree / "a.mp4") in str(error.value) and str(tree / "sub" / "c.mp4") in str(error.value)


def test_duplicate_is_raised_before_any_work(tmp_path, run_cli, tiny_model_name):
    _touch(tmp_path / "one" / "clip.mp4")
    _touch(tmp_path / "two" / "clip.mp4")
    store = tmp_path / "store"
    result = run_cli("extract", tmp_path / "one", tmp_path / "two", "--store", store, "--model", tiny_model_name,
                     "--pretrained", "none", "--workers", "0", "--no-progress")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: duplicate video id 'clip'")
    assert not store.exists()


def test_missing_input_raises(tmp_path, tree):
    with pytest.raises(InputError, match="does not exist"):
        collect_sources([tree, tmp_path / "nope.mp4"])
    with pytest.raises(InputError, match="does not exist"):
        collect_sources([tmp_path / "no_such_folder"])


def test_no_inputs_raise():
    with pytest.raises(InputError):
        collect_sources([])


def test_empty_folder_gives_no_sources(tmp_path):
    (tmp_path / "nothing").mkdir()
    assert collect_sources([tmp_path / "nothing"]) == []
