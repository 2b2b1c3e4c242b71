"""`cirbench data check`: files present, counts, missing images, and what to put where."""
import shutil

from cirbench.data.check import check
from tests.helpers import run_cli as cirbench


def rows(report):
    return {(r.split, r.category): (r.triplets, r.images, r.found, len(r.missing)) for r in report.rows}


def test_a_complete_fashioniq_folder(capsys, make_fashioniq):
    root = make_fashioniq()
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root)
    assert code == 0 and "OK: usable" in out and "MISSING" not in out
    r = rows(check("fashioniq", root))
    assert len(r) == 9
    assert r[("train", "dress")] == (3, 6, 6, 0) and r[("val", "shirt")] == (2, 4, 4, 0)
    assert r[("test", "toptee")] == (2, 3, 3, 0)


def test_missing_images_are_counted_and_named(capsys, make_fashioniq):
    root = make_fashioniq(missing=["dress7", "shirt0"])
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root)
    assert code == 0 and "2 referenced image(s) missing" in out and "dress7.png" in out and "dead" in out
    report = check("fashioniq", root)
    r = rows(report)
    assert r[("val", "dress")] == (2, 4, 3, 1) and r[("train", "shirt")] == (3, 6, 5, 1)
    # issue 18 item 4: what survives, and a loud line when a split loses more than LOSS_WARNING
    usable = {(x.split, x.category): x.usable for x in report.rows}
    assert usable[("val", "dress")] == 1 and usable[("train", "shirt")] == 2 and usable[("val", "shirt")] == 2
    assert "USABLE WITH LOSSES: train/shirt, val/dress lose more than 20% of their triplets" in out
    assert "OK: usable" not in out


def test_images_in_the_wrong_folder_say_where_to_move_them(capsys, make_fashioniq):
    root = make_fashioniq()
    (root / "images").rename(root / "imgs")
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root)
    assert code == 1 and "NOT USABLE" in out
    assert f"no images in {root / 'images'}" in out and str(root / "imgs") in out and "move the image files" in out
    assert "FashionIQ's official layout" in out


def test_missing_annotation_files(capsys, make_fashioniq):
    root = make_fashioniq()
    (root / "captions/cap.shirt.test.json").unlink()
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root)
    assert code == 0 and "MISSING  captions/cap.shirt.test.json" in out and "warning: missing" in out
    (root / "image_splits/split.dress.val.json").unlink()
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root)
    assert code == 1 and f"put it at {root / 'image_splits/split.dress.val.json'}" in out
    shutil.rmtree(root / "captions")
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root)
    assert code == 1 and "no captions/ folder" in out
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", root / "nowhere")
    assert code == 1 and "is not a folder" in out


def test_cirr_layouts(capsys, make_cirr, tmp_path):
    for layout in ("flat", "nested", "img_raw"):
        root = make_cirr(tmp_path / layout, layout=layout)
        report = check("cirr", root)
        assert report.ok, report.render()
        assert rows(report) == {("train", "-"): (2, 4, 4, 0), ("val", "-"): (3, 6, 6, 0), ("test1", "-"): (2, 6, 6, 0)}
    root = make_cirr(tmp_path / "moved")
    (root / "images").mkdir()
    (root / "dev").rename(root / "images" / "dev")
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "cirr", "--root", root)
    assert code == 1 and "no image of the val split" in out and str(root / "images" / "dev") in out
    assert "CIRR's official layout" in out


def test_cirr_malformed_file(capsys, make_cirr):
    root = make_cirr()
    (root / "captions/cap.rc2.val.json").write_text("[{")
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "cirr", "--root", root)
    assert code == 1 and "cap.rc2.val.json is not valid JSON" in out


def test_real_annotation_folders(capsys, real_annotations):
    report = check("cirr", real_annotations / "cirr")
    assert rows(report)[("val", "-")][:2] == (4181, 2297) and rows(report)[("test1", "-")][:2] == (4148, 2315)
    assert not report.ok and any("cap.rc2.train.json" in e for e in report.errors)  # train captions not shipped
    code, out, _ = cirbench(capsys, "data", "check", "--dataset", "fashioniq", "--root", real_annotations / "fashioniq",
                            "--no-images")
    assert code == 0 and "OK: usable" in out
    r = rows(check("fashioniq", real_annotations / "fashioniq", images=False))
    assert [r[("val", c)][0] for c in ("dress", "shirt", "toptee")] == [2017, 2038, 1961]
