"""FashionIQ / CIRR loaders: tiny generated folders in the official layouts, and the real
annotation files (skipped when absent)."""
import json
import logging
import shutil

import pytest

from cirbench.data.loaders import load_cirr, load_dataset, load_fashioniq
from cirbench.errors import ConfigError, DataError
from tests.helpers import edit_json


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == "cirbench" and r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- FashionIQ


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_fashioniq_tiny(make_fashioniq, ext, caplog):
    root = make_fashioniq(ext=ext)
    ds = load_fashioniq(root, splits=("train", "val", "test"))
    assert (ds.name, ds.layout, ds.root) == ("fashioniq", "fashioniq", root)
    assert list(ds.splits) == ["train", "val", "test"]
    assert ds.categories == ["dress", "shirt", "toptee"]
    train, val, test = ds.split("train"), ds.split("val"), ds.split("test")
    assert [t.qid for t in train.triplets] == [f"{c}/{i}" for c in ("dress", "shirt", "toptee") for i in range(3)]
    t = train.triplets[1]
    assert (t.reference, t.target, t.category, t.members) == ("dress2", "dress3", "dress", ())
    assert t.captions == ("is dress train 1 a", "dress train 1 b")
    assert val.gallery == {c: [f"{c}{i}" for i in range(6, 10)] for c in ("dress", "shirt", "toptee")}
    assert len(test.triplets) == 6 and all(t.target is None for t in test.triplets)
    assert not test.has_targets and val.has_targets
    assert set(ds.image_paths) == {f"{c}{i}" for c in ("dress", "shirt", "toptee") for i in range(13)}
    assert ds.image_paths["shirt4"] == root / "images" / f"shirt4.{ext}"
    assert all(p.is_file() for p in ds.image_paths.values())
    assert not warnings_of(caplog)


def test_fashioniq_prefers_png_and_reads_one_split_as_string(make_fashioniq):
    root = make_fashioniq(ext="png")
    (root / "images" / "dress6.jpg").write_bytes((root / "images" / "dress6.png").read_bytes())
    ds = load_fashioniq(root, splits="val")
    assert list(ds.splits) == ["val"]
    assert ds.image_paths["dress6"].name == "dress6.png"


def test_fashioniq_categories_subset_in_official_order(make_fashioniq):
    root = make_fashioniq()
    ds = load_fashioniq(root, splits=("val",), categories=["toptee", "dress"])
    assert ds.categories == ["dress", "toptee"]
    assert [t.category for t in ds.split("val").triplets] == ["dress"] * 2 + ["toptee"] * 2
    assert set(ds.image_paths) == {f"{c}{i}" for c in ("dress", "toptee") for i in range(6, 10)}


def test_fashioniq_detects_present_categories_and_warns(make_fashioniq, caplog):
    root = make_fashioniq(categories=("shirt",))
    ds = load_fashioniq(root, splits=("train",))
    assert ds.categories == ["shirt"]
    [w] = warnings_of(caplog)
    assert "only the categories shirt" in w.getMessage()


def test_fashioniq_missing_images_are_skipped_with_one_warning(make_fashioniq, caplog):
    # dress2: reference of dress/1; toptee5: target of toptee/2 and train gallery; shirt7: target of
    # shirt/0 in val and val gallery; dress12: test gallery only (test not loaded)
    root = make_fashioniq(missing=["dress2", "toptee5", "shirt7", "dress12"])
    with caplog.at_level(logging.INFO, logger="cirbench"):
        ds = load_fashioniq(root)
    [w] = warnings_of(caplog)
    msg = w.getMessage()
    assert "skipped 3 of 15 triplets and 3 of 30 gallery images" in msg
    assert str(root / "images") in msg and "dead image links" in msg
    train_qids = [t.qid for t in ds.split("train").triplets]
    assert "dress/1" not in train_qids and "toptee/2" not in train_qids
    assert "dress/2" in train_qids  # qids keep their position in the captions file
    assert [t.qid for t in ds.split("val").triplets] == ["dress/0", "dress/1", "shirt/1", "toptee/0", "toptee/1"]
    assert "toptee5" not in ds.split("train").gallery["toptee"]
    assert ds.split("val").gallery["shirt"] == ["shirt6", "shirt8", "shirt9"]
    assert "dress2" not in ds.image_paths and "dress3" in ds.image_paths


def test_fashioniq_without_images(make_fashioniq, caplog):
    root = make_fashioniq(images=False)
    with pytest.raises(DataError, match=r"no image of the 'train' split found.*images"):
        load_fashioniq(root)
    ds = load_fashioniq(root, require_images=False)
    assert ds.image_paths == {}
    assert len(ds.split("train").triplets) == 9 and len(ds.split("val").gallery["dress"]) == 4
    assert not warnings_of(caplog)


# --------------------------------------------------------------------------- CIRR


@pytest.mark.parametrize("layout", ["flat", "nested", "img_raw"])
def test_cirr_tiny_layouts(make_cirr, layout, caplog):
    root = make_cirr(layout=layout)
    ds = load_cirr(root, splits=("train", "val", "test1"))
    assert (ds.name, ds.layout, ds.categories) == ("cirr", "cirr", ["cirr"])
    val = ds.split("val")
    assert [t.qid for t in val.triplets] == ["2", "3", "4"]
    t = val.triplets[0]
    assert (t.reference, t.target, t.captions, t.category) == ("dev-0-0-img0", "dev-1-0-img0", ("val caption 2",), "cirr")
    assert t.members == tuple(f"dev-{k}-0-img0" for k in range(6))
    assert val.gallery == {"cirr": [f"dev-{k}-0-img0" for k in range(6)]}
    assert all(t.target is None for t in ds.split("test1").triplets)
    base = root / "img_raw" if layout == "img_raw" else root
    assert ds.image_paths["dev-3-0-img0"] == base / "dev" / "dev-3-0-img0.png"
    assert ds.image_paths["train-3-0-img0"] == base / "train" / "1" / "train-3-0-img0.png"
    assert len(ds.image_paths) == 16 and all(p.is_file() for p in ds.image_paths.values())
    assert not warnings_of(caplog)


def test_cirr_missing_images_are_skipped_but_members_stay(make_cirr, caplog):
    root = make_cirr(layout="nested", missing=["dev-1-0-img0", "dev-5-0-img0"])
    ds = load_cirr(root, splits="val")
    [w] = warnings_of(caplog)
    assert "skipped 2 of 3 triplets and 2 of 6 gallery images" in w.getMessage()
    [t] = ds.split("val").triplets
    assert t.qid == "3" and "dev-5-0-img0" in t.members
    assert ds.split("val").gallery["cirr"] == ["dev-0-0-img0", "dev-2-0-img0", "dev-3-0-img0", "dev-4-0-img0"]


def test_cirr_annotation_only(make_cirr):
    root = make_cirr(images=False)
    with pytest.raises(DataError, match=r"no image of the 'train' split found.*train-0-0-img0.png"):
        load_cirr(root)
    ds = load_dataset("cirr", root, splits=("val", "test1"), require_images=False)
    assert ds.image_paths == {} and len(ds.split("val").triplets) == 3


# --------------------------------------------------------------------------- errors


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="FashionIQ root .*nowhere does not exist"):
        load_fashioniq(tmp_path / "nowhere")
    with pytest.raises(DataError, match="CIRR root .*nowhere does not exist"):
        load_cirr(tmp_path / "nowhere")


@pytest.mark.parametrize("folder", ["captions", "image_splits"])
def test_missing_folder(make_fashioniq, folder):
    root = make_fashioniq()
    shutil.rmtree(root / folder)
    with pytest.raises(DataError, match=f"(?s)no {folder}/ folder in .*official layout"):
        load_fashioniq(root)


def test_cirr_without_annotations(tmp_path):
    with pytest.raises(DataError, match=r"no CIRR annotations .*cirr/captions"):
        load_cirr(tmp_path)


@pytest.mark.parametrize("name", ["captions/cap.shirt.val.json", "image_splits/split.toptee.train.json"])
def test_missing_file(make_fashioniq, name):
    root = make_fashioniq()
    (root / name).unlink()
    with pytest.raises(DataError) as e:
        load_fashioniq(root, require_images=False)
    msg = str(e.value)
    assert f"missing annotation file {name.split('/')[1]}" in msg and str(root / name) in msg
    assert "official layout" in msg


def test_cirr_missing_file(make_cirr):
    root = make_cirr(layout="nested")
    (root / "cirr/captions/cap.rc2.train.json").unlink()
    with pytest.raises(DataError, match=r"cap.rc2.train.json: expected it at .*cirr/captions/cap.rc2.train.json"):
        load_cirr(root)


def test_malformed_json(make_fashioniq):
    root = make_fashioniq()
    (root / "captions/cap.dress.val.json").write_text('[\n  {"candidate": "dress6",\n   "target": }\n]')
    with pytest.raises(DataError, match=r"cap.dress.val.json is not valid JSON: .* line 3, column 14"):
        load_fashioniq(root)


def test_missing_key(make_fashioniq, make_cirr):
    root = make_fashioniq()
    edit_json(root / "captions/cap.toptee.train.json", lambda entries: entries[2].pop("captions"))
    with pytest.raises(DataError, match=r"cap.toptee.train.json, entry 2: missing required key 'captions'"):
        load_fashioniq(root)

    root = make_cirr()
    edit_json(root / "captions/cap.rc2.val.json", lambda entries: entries[1]["img_set"].pop("members"))
    with pytest.raises(DataError, match=r"cap.rc2.val.json, entry 1: missing required key 'img_set.members'"):
        load_cirr(root)


def test_target_required_outside_test(make_fashioniq):
    root = make_fashioniq()
    edit_json(root / "captions/cap.dress.val.json", lambda entries: entries[0].pop("target"))
    with pytest.raises(DataError, match=r"entry 0: missing required key 'target'"):
        load_fashioniq(root)


def test_wrong_json_shapes(make_fashioniq, make_cirr):
    root = make_fashioniq()
    (root / "image_splits/split.dress.val.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="split.dress.val.json should hold a list of image ids"):
        load_fashioniq(root)
    root = make_cirr()
    (root / "image_splits/split.rc2.val.json").write_text('["dev-0-0-img0"]')
    with pytest.raises(DataError, match="split.rc2.val.json should map image names to relative paths"):
        load_cirr(root)


def test_bad_split_category_and_layout(make_fashioniq, make_cirr):
    root = make_fashioniq()
    with pytest.raises(ConfigError, match=r"unknown FashionIQ split 'test1'; valid FashionIQ splits: train, val, test"):
        load_fashioniq(root, splits=("val", "test1"))
    with pytest.raises(ConfigError, match=r"unknown FashionIQ category 'skirt'; valid categories: dress, shirt, toptee"):
        load_fashioniq(root, categories=["dress", "skirt"])
    with pytest.raises(ConfigError, match=r"unknown CIRR split 'test'; valid CIRR splits: train, val, test1"):
        load_cirr(make_cirr(), splits="test")
    with pytest.raises(ConfigError, match=r"unknown dataset layout 'shapes'; valid layouts: fashioniq, cirr"):
        load_dataset("shapes", root)


# --------------------------------------------------------------------------- real annotation files

FIQ_VAL = {"dress": 2017, "shirt": 2038, "toptee": 1961}
FIQ_TRAIN = {"dress": 5985, "shirt": 5988, "toptee": 6027}


def test_real_cirr(real_annotations):
    ds = load_cirr(real_annotations / "cirr", splits=("val", "test1"), require_images=False)
    val, test = ds.split("val"), ds.split("test1")
    assert len(val.triplets) == 4181 and len(val.gallery["cirr"]) == 2297
    assert len(test.triplets) == 4148 and all(t.target is None for t in test.triplets)
    assert len(test.gallery["cirr"]) == len(json.loads((real_annotations / "cirr/image_splits/split.rc2.test1.json").read_text()))
    t = val.triplets[0]
    assert t.qid == "12060" and t.reference == "dev-244-0-img0" and t.target == "dev-1028-1-img1"
    assert len(t.members) == 6 and t.reference in t.members
    assert {t.target for t in val.triplets} <= set(val.gallery["cirr"])


def test_real_cirr_train_split_sized_file_loads(real_annotations, tmp_path):
    """The real train split file (16,939 images) with a synthetic captions file of as many entries."""
    names = list(json.loads((real_annotations / "cirr/image_splits/split.rc2.train.json").read_text()))
    assert len(names) == 16939
    (tmp_path / "image_splits").mkdir()
    shutil.copy(real_annotations / "cirr/image_splits/split.rc2.train.json", tmp_path / "image_splits")
    entries = [{"pairid": i, "reference": n, "target_hard": names[i - 1], "target_soft": {names[i - 1]: 1.0},
                "caption": f"caption {i}", "img_set": {"id": i, "members": names[i:i + 6]}}
               for i, n in enumerate(names)]
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions/cap.rc2.train.json").write_text(json.dumps(entries))
    ds = load_cirr(tmp_path, splits="train", require_images=False)
    assert len(ds.split("train").triplets) == 16939 and len(ds.split("train").gallery["cirr"]) == 16939


def test_real_cirr_train_captions_absent(real_annotations):
    # The shared copy has no CIRR train captions: the error must say which file, where.
    if (real_annotations / "cirr/captions/cap.rc2.train.json").exists():
        pytest.skip("CIRR train captions present")
    with pytest.raises(DataError, match=r"cap.rc2.train.json: expected it at .*cirr/captions/cap.rc2.train.json"):
        load_cirr(real_annotations / "cirr", splits="train", require_images=False)


def test_real_fashioniq(real_annotations):
    root = real_annotations / "fashioniq"
    ds = load_fashioniq(root, splits=("train", "val", "test"), require_images=False)
    assert ds.categories == ["dress", "shirt", "toptee"]
    for split, counts in (("train", FIQ_TRAIN), ("val", FIQ_VAL)):
        sp = ds.split(split)
        got = {c: sum(t.category == c for t in sp.triplets) for c in counts}
        assert got == counts
        for c in counts:
            assert len(sp.gallery[c]) == len(json.loads((root / f"image_splits/split.{c}.{split}.json").read_text()))
    assert len(ds.split("train").triplets) == 18000
    val = ds.split("val").triplets
    assert [t.qid for t in val[:2]] == ["dress/0", "dress/1"]
    assert val[2017].qid == "shirt/0" and val[-1].qid == "toptee/1960"
    assert all(len(t.captions) == 2 for t in val)
    assert all(t.target is None for t in ds.split("test").triplets)
