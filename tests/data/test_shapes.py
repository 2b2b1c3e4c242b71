"""Tests of the procedural shapes datasets (cirbench.data.shapes): official layouts, exact
JSON shapes, images on disk, metadata true to the pixels, texts true to the edits, hard
near-duplicate galleries, determinism and atomic writing."""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from cirbench.data import shapes
from cirbench.data.shapes import (
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    cell_center,
    describe,
    generate,
)
from cirbench.errors import ConfigError
from tests.helpers import full_size_shapes

CATEGORIES = ("dress", "shirt", "toptee")
FIQ_SPLITS = ("train", "val", "test")
CIRR_SPLITS = ("train", "val", "test1")
SIZE_WORDS = ("bigger", "larger", "large", "big", "enlarge", "grow", "increase", "scale up",
              "smaller", "small", "shrink", "tiny", "reduce", "scale down")
REMOVE_WORDS = ("remove", "get rid", "delete", "take away", "take out", "erase", "without", "gone",
                "no longer", "drop")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True, scope="module")
def _generator_at_full_size():
    """Other tests shrink the generator (conftest); these test it at its real sizes."""
    with full_size_shapes():
        yield


@pytest.fixture(scope="module")
def fiq(tmp_path_factory) -> Path:
    return generate("fashioniq", tmp_path_factory.mktemp("fiq") / "shapes_fashioniq", seed=0)


@pytest.fixture(scope="module")
def cirr(tmp_path_factory) -> Path:
    return generate("cirr", tmp_path_factory.mktemp("cirr") / "shapes_cirr", seed=0)


def load(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def fiq_meta(fiq):
    return load(fiq / "metadata.json")


@pytest.fixture(scope="module")
def cirr_meta(cirr):
    return load(cirr / "metadata.json")


def fiq_image(root: Path, image_id: str) -> Path:
    return root / "images" / f"{image_id}.png"


def cirr_image(root: Path, split: str, name: str) -> Path:
    return root / load(root / "image_splits" / f"split.rc2.{split}.json")[name]


# --------------------------------------------------------------------------- metadata helpers

def edit_kinds(a: dict, b: dict) -> list:
    """Atomic edits turning image a into image b, read from their metadata."""
    kinds = ["background"] if a["background"] != b["background"] else []
    A = {o["position"]: o for o in a["objects"]}
    B = {o["position"]: o for o in b["objects"]}
    for p in A.keys() & B.keys():
        kinds += [attr for attr in ("color", "shape", "size") if A[p][attr] != B[p][attr]]
    removed = [A[p] for p in A if p not in B]
    added = [B[p] for p in B if p not in A]
    for o in list(removed):
        same = [q for q in added if all(q[k] == o[k] for k in ("shape", "color", "size"))]
        if same:
            kinds.append("move")
            removed.remove(o)
            added.remove(same[0])
    return sorted(kinds + ["remove"] * len(removed) + ["add"] * len(added))


def changed_objects(a: dict, b: dict):
    """(object of a, object of b) at the same position that differ."""
    A = {o["position"]: o for o in a["objects"]}
    B = {o["position"]: o for o in b["objects"]}
    return [(A[p], B[p]) for p in A.keys() & B.keys() if A[p] != B[p]]


def fiq_text(captions) -> str:
    return " and ".join(captions).lower()


def assert_text_mentions(kind: str, ref: dict, tgt: dict, text: str) -> None:
    text = text.lower()
    if kind in ("color", "shape"):
        (_, new), = changed_objects(ref, tgt)
        assert new[kind] in text, (kind, new, text)
    elif kind == "size":
        assert any(w in text for w in SIZE_WORDS), text
    elif kind == "move":
        new = {o["position"] for o in tgt["objects"]} - {o["position"] for o in ref["objects"]}
        assert next(iter(new)) in text, text
    elif kind == "add":
        new = [o for o in tgt["objects"] if o not in ref["objects"]]
        assert new[0]["shape"] in text and new[0]["color"] in text, text
    elif kind == "remove":
        assert any(w in text for w in REMOVE_WORDS), text
    elif kind == "background":
        assert "background" in text and tgt["background"] in text, text
    else:  # pragma: no cover
        raise AssertionError(kind)


# --------------------------------------------------------------------------- API and errors

def test_unknown_layout_raises_config_error(tmp_path):
    with pytest.raises(ConfigError):
        generate("coco", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert set(shapes.LAYOUTS) == {"fashioniq", "cirr"}


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError):
        generate("cirr", out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = shapes._write_png

    def failing(path, scene):
        calls["n"] += 1
        if calls["n"] > 50:
            raise KeyboardInterrupt
        real(path, scene)

    monkeypatch.setattr(shapes, "_write_png", failing)
    with pytest.raises(KeyboardInterrupt):
        generate("cirr", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor the temporary folder


def test_marker_is_written_last(fiq, cirr):
    for root, layout in ((fiq, "fashioniq"), (cirr, "cirr")):
        marker = root / ".complete"
        info = load(marker)
        assert info["layout"] == layout and info["seed"] == 0
        assert info["generator_version"] == shapes.GENERATOR_VERSION
        newest = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p != marker)
        assert marker.stat().st_mtime_ns >= newest
        assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary folder left


# --------------------------------------------------------------------------- FashionIQ layout

def test_fashioniq_files_in_official_layout(fiq):
    for cat in CATEGORIES:
        for split in FIQ_SPLITS:
            assert (fiq / "captions" / f"cap.{cat}.{split}.json").is_file()
            assert (fiq / "image_splits" / f"split.{cat}.{split}.json").is_file()
    assert (fiq / "metadata.json").is_file() and (fiq / "images").is_dir()


def test_fashioniq_json_keys_exactly_official(fiq):
    for cat in CATEGORIES:
        for split in FIQ_SPLITS:
            entries = load(fiq / "captions" / f"cap.{cat}.{split}.json")
            assert len(entries) == shapes.FASHIONIQ_TRIPLETS[split]
            keys = {"candidate", "captions"} | ({"target"} if split != "test" else set())
            for e in entries:
                assert set(e) == keys
                assert isinstance(e["candidate"], str) and len(e["captions"]) == 2
                assert all(isinstance(c, str) and c.strip(".?, ") for c in e["captions"])
                if split != "test":
                    assert e["target"] != e["candidate"]
            gallery = load(fiq / "image_splits" / f"split.{cat}.{split}.json")
            assert isinstance(gallery, list) and all(isinstance(i, str) for i in gallery)
            assert len(set(gallery)) == len(gallery)


def test_fashioniq_captions_look_like_annotations(fiq):
    captions = [c for cat in CATEGORIES for e in load(fiq / "captions" / f"cap.{cat}.train.json")
                for c in e["captions"]]
    assert all(c == c.lower() for c in captions)
    noisy = sum(c != c.rstrip(". ") for c in captions)
    assert 0 < noisy < 0.2 * len(captions)  # mostly no final period, sometimes a '.' or ' '
    assert len(set(captions)) > 0.5 * len(captions)  # varied wording


def test_fashioniq_every_image_exists_and_is_a_64x64_rgb_png(fiq, fiq_meta):
    all_ids = []
    for cat in CATEGORIES:
        for split in FIQ_SPLITS:
            gallery = load(fiq / "image_splits" / f"split.{cat}.{split}.json")
            all_ids += gallery
            for e in load(fiq / "captions" / f"cap.{cat}.{split}.json"):
                assert e["candidate"] in gallery and e.get("target", gallery[0]) in gallery
    assert len(set(all_ids)) == len(all_ids)  # ids unique across categories and splits
    assert set(all_ids) == set(fiq_meta)
    assert {p.stem for p in (fiq / "images").iterdir()} == set(all_ids)
    for image_id in all_ids[::7]:
        with Image.open(fiq_image(fiq, image_id)) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)


def test_fashioniq_val_targets_and_candidates_in_category_gallery(fiq, fiq_meta):
    for cat in CATEGORIES:
        gallery = set(load(fiq / "image_splits" / f"split.{cat}.val.json"))
        assert 500 <= len(gallery) <= 700
        for e in load(fiq / "captions" / f"cap.{cat}.val.json"):
            assert e["candidate"] in gallery and e["target"] in gallery
        assert all(fiq_meta[i]["category"] == cat and fiq_meta[i]["split"] == "val" for i in gallery)


def test_fashioniq_edits_are_one_or_two_atomic_changes(fiq, fiq_meta):
    counts = Counter()
    for cat in CATEGORIES:
        for e in load(fiq / "captions" / f"cap.{cat}.val.json"):
            n = len(edit_kinds(fiq_meta[e["candidate"]], fiq_meta[e["target"]]))
            counts[n] += 1
    assert set(counts) <= {1, 2, 3, 4}  # a move plus a recolour of one object reads as remove + add
    assert counts[1] > 0.4 * sum(counts.values()) and counts[2] > 0.15 * sum(counts.values())


def test_fashioniq_val_galleries_hold_near_duplicates(fiq, fiq_meta):
    """For each query the gallery holds the reference's scene edited the same way otherwise."""
    for cat in CATEGORIES:
        gallery = load(fiq / "image_splits" / f"split.{cat}.val.json")
        entries = load(fiq / "captions" / f"cap.{cat}.val.json")
        misses, neighbours = 0, []
        for e in entries:
            ref, tgt = fiq_meta[e["candidate"]], fiq_meta[e["target"]]
            kinds = edit_kinds(ref, tgt)
            others = [edit_kinds(ref, fiq_meta[g]) for g in gallery if g not in (e["candidate"], e["target"])]
            neighbours.append(sum(len(k) == 1 for k in others))
            found = any(k == kinds or (len(kinds) == 2 and len(k) == 1 and k[0] in kinds) for k in others)
            if len(kinds) == 1:
                assert found, (e, kinds)
            misses += not found
        assert misses <= 0.05 * len(entries)
        neighbours.sort()
        assert neighbours[len(neighbours) // 2] >= 10  # median query: >= 10 one-edit look-alikes


# --------------------------------------------------------------------------- CIRR layout

def test_cirr_files_and_json_keys_exactly_official(cirr):
    name = re.compile(r"^(train|dev|test1)-\d+-\d-img\d$")
    for split in CIRR_SPLITS:
        entries = load(cirr / "captions" / f"cap.rc2.{split}.json")
        paths = load(cirr / "image_splits" / f"split.rc2.{split}.json")
        assert len(entries) == 5 * shapes.CIRR_GROUPS[split]
        prefix = {"train": "./train/", "val": "./dev/", "test1": "./test1/"}[split]
        for n, rel in paths.items():
            assert name.match(n) and rel.startswith(prefix) and rel.endswith(f"/{n}.png")
            if split == "train":
                assert re.match(r"^\./train/\d+/", rel)
        for e in entries:
            if split == "test1":
                assert set(e) == {"pairid", "reference", "caption", "img_set"}
                assert set(e["img_set"]) == {"id", "members", "reference_rank"}
            else:
                assert set(e) == {"pairid", "reference", "target_hard", "target_soft", "caption", "img_set"}
                assert set(e["img_set"]) == {"id", "members", "reference_rank", "target_rank"}
                assert e["target_soft"] == {e["target_hard"]: 1.0}
            assert isinstance(e["pairid"], int) and isinstance(e["img_set"]["id"], int)
            assert isinstance(e["caption"], str) and e["caption"].strip()


def test_cirr_sets_and_pairs(cirr):
    pairids = []
    for split in CIRR_SPLITS:
        paths = load(cirr / "image_splits" / f"split.rc2.{split}.json")
        ranks = {}
        for e in load(cirr / "captions" / f"cap.rc2.{split}.json"):
            pairids.append(e["pairid"])
            members = e["img_set"]["members"]
            assert len(members) == 6 == len(set(members)) and set(members) <= set(paths)
            assert e["reference"] in members
            assert 0 <= e["img_set"]["reference_rank"] < 6
            seen = ranks.setdefault(e["img_set"]["id"], {"members": members, "ranks": {}})
            assert seen["members"] == members  # one set, one member list
            assert seen["ranks"].setdefault(e["reference"], e["img_set"]["reference_rank"]) == \
                e["img_set"]["reference_rank"]
            if split != "test1":
                assert e["target_hard"] in members and e["target_hard"] != e["reference"]
                assert seen["ranks"].setdefault(e["target_hard"], e["img_set"]["target_rank"]) == \
                    e["img_set"]["target_rank"]
    assert len(set(pairids)) == len(pairids)  # unique across splits


def test_cirr_every_image_exists_and_is_a_64x64_rgb_png(cirr, cirr_meta):
    names = []
    for split in CIRR_SPLITS:
        paths = load(cirr / "image_splits" / f"split.rc2.{split}.json")
        names += list(paths)
        for n, rel in paths.items():
            assert (cirr / rel).is_file()
            assert cirr_meta[n]["category"] == "cirr" and cirr_meta[n]["split"] == split
        for n in list(paths)[::5]:
            with Image.open(cirr / paths[n]) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)
    assert len(set(names)) == len(names) and set(names) == set(cirr_meta)
    val = load(cirr / "image_splits" / "split.rc2.val.json")
    assert 400 <= len(val) <= 700


def test_cirr_edits_are_small(cirr, cirr_meta):
    for e in load(cirr / "captions" / "cap.rc2.val.json"):
        kinds = edit_kinds(cirr_meta[e["reference"]], cirr_meta[e["target_hard"]])
        assert 1 <= len(kinds) <= 4, kinds


# --------------------------------------------------------------------------- images and metadata

def test_no_two_ids_share_an_image_within_a_gallery(fiq, cirr):
    galleries = [[fiq_image(fiq, i) for i in load(fiq / "image_splits" / f"split.{cat}.val.json")]
                 for cat in CATEGORIES]
    galleries += [[cirr / rel for rel in load(cirr / "image_splits" / f"split.rc2.{split}.json").values()]
                  for split in ("val", "test1")]
    for paths in galleries:
        digests = {hashlib.sha1(Image.open(p).tobytes()).hexdigest() for p in paths}
        assert len(digests) == len(paths)


def test_metadata_matches_the_pixels(fiq, fiq_meta, cirr, cirr_meta):
    samples = [(fiq_image(fiq, i), fiq_meta[i]) for i in sorted(fiq_meta)[::5]]
    samples += [(cirr_image(cirr, "val", n), cirr_meta[n]) for n in load(cirr / "image_splits" / "split.rc2.val.json")]
    for path, meta in samples:
        assert 2 <= len(meta["objects"]) <= 4
        assert set(meta["objects"][0]) == {"shape", "color", "size", "position"}
        with Image.open(path) as im:
            for o in meta["objects"]:
                assert im.getpixel(cell_center(o["position"])) == COLORS[o["color"]], (path, o)
            used = {o["position"] for o in meta["objects"]}
            assert len(used) == len(meta["objects"])  # one object per cell
            for p in set(POSITIONS) - used:
                assert im.getpixel(cell_center(p)) == BACKGROUNDS[meta["background"]]


def test_colour_change_triplets_change_exactly_that_colour(fiq, fiq_meta):
    checked = 0
    for cat in CATEGORIES:
        for e in load(fiq / "captions" / f"cap.{cat}.val.json"):
            ref, tgt = fiq_meta[e["candidate"]], fiq_meta[e["target"]]
            if edit_kinds(ref, tgt) != ["color"]:
                continue
            assert ref["background"] == tgt["background"] and len(ref["objects"]) == len(tgt["objects"])
            (old, new), = changed_objects(ref, tgt)
            assert {k: v for k, v in old.items() if k != "color"} == {k: v for k, v in new.items() if k != "color"}
            assert old["color"] != new["color"]
            with Image.open(fiq_image(fiq, e["target"])) as im:
                assert im.getpixel(cell_center(new["position"])) == COLORS[new["color"]]
            with Image.open(fiq_image(fiq, e["candidate"])) as im:
                assert im.getpixel(cell_center(old["position"])) == COLORS[old["color"]]
            assert new["color"] in fiq_text(e["captions"])
            checked += 1
    assert checked >= 30


def test_modification_text_mentions_the_edited_attribute(fiq, fiq_meta, cirr, cirr_meta):
    seen = Counter()
    for cat in CATEGORIES:
        for e in load(fiq / "captions" / f"cap.{cat}.val.json"):
            ref, tgt = fiq_meta[e["candidate"]], fiq_meta[e["target"]]
            kinds = edit_kinds(ref, tgt)
            if len(kinds) == 1:
                assert_text_mentions(kinds[0], ref, tgt, fiq_text(e["captions"]))
                seen[kinds[0]] += 1
    for e in load(cirr / "captions" / "cap.rc2.val.json"):
        ref, tgt = cirr_meta[e["reference"]], cirr_meta[e["target_hard"]]
        kinds = edit_kinds(ref, tgt)
        if len(kinds) == 1:
            assert_text_mentions(kinds[0], ref, tgt, e["caption"])
            seen[kinds[0]] += 1
    assert {"color", "shape", "size", "move", "add", "remove"} <= set(seen)


def test_every_shape_and_size_renders_differently():
    masks = set()
    for shape in shapes.SHAPES:
        for size in shapes.SIZES:
            scene = shapes._Scene("black", (shapes._Obj(shape, "red", size, "center"),))
            image = shapes._render(scene)
            data, background = image.tobytes(), bytes(BACKGROUNDS["black"])
            masks.add(bytes(data[i:i + 3] != background for i in range(0, len(data), 3)))
    assert len(masks) == 2 * len(shapes.SHAPES)


# --------------------------------------------------------------------------- determinism

def tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(fiq, cirr, tmp_path):
    for root, layout in ((fiq, "fashioniq"), (cirr, "cirr")):
        again = generate(layout, tmp_path / layout, seed=0)
        first, second = tree_bytes(root), tree_bytes(again)
        assert first.keys() == second.keys()
        assert all(first[k] == second[k] for k in first)  # JSON and every PNG, byte for byte


def test_other_seed_differs_and_replaces_a_generated_dataset(cirr, tmp_path):
    out = generate("cirr", tmp_path / "c", seed=0)
    generate("cirr", out, seed=1)  # replacing a previously generated dataset is allowed
    assert load(out / ".complete")["seed"] == 1
    assert load(out / "captions" / "cap.rc2.val.json") != load(cirr / "captions" / "cap.rc2.val.json")
    assert (out / "metadata.json").read_bytes() != (cirr / "metadata.json").read_bytes()


# --------------------------------------------------------------------------- describe

def test_describe_is_complete_varied_and_deterministic(fiq_meta):
    meta = fiq_meta[sorted(fiq_meta)[0]]
    texts = {describe(meta, random.Random(s)) for s in range(30)}
    assert len(texts) > 10
    assert describe(meta, random.Random(3)) == describe(meta, random.Random(3))
    for text in texts:
        assert meta["background"] in text
        for o in meta["objects"]:
            assert o["color"] in text and o["shape"] in text and o["position"] in text
