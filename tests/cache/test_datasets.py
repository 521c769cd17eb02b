"""The dataset registry and finding datasets on disk, in the layouts users actually have."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from cache.data.datasets import REGISTRY, DatasetError, open_dataset, prompt_words


def test_registry_has_domainbeds_five_with_sorted_classes():
    expected = {
        "pacs": (4, 7),
        "vlcs": (4, 5),
        "officehome": (4, 65),
        "terra_incognita": (4, 10),
        "domainnet": (6, 345),
    }
    for name, (domains, classes) in expected.items():
        spec = REGISTRY[name]
        assert (len(spec.domains), len(spec.classes)) == (domains, classes)
        assert list(spec.classes) == sorted(spec.classes) and list(spec.domains) == sorted(spec.domains)
    assert REGISTRY["officehome"].folder == "office_home" and "Real World" in REGISTRY["officehome"].domains


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("Alarm_Clock", "alarm clock"),
        ("TV", "TV"),
        ("art_painting", "art painting"),
        ("The_Eiffel_Tower", "the eiffel tower"),
        ("dog", "dog"),
    ],
)
def test_class_names_become_prompt_words(name, words):
    assert prompt_words(name) == words


def test_registered_renames_and_anchors():
    assert REGISTRY["officehome"].prompt_name("Postit_Notes") == "post-it notes"
    assert REGISTRY["vlcs"].anchor_words(REGISTRY["vlcs"].domains) == (
        "bright photo",
        "corrupted photo",
        "dark photo",
        "good photo",
    )
    assert REGISTRY["pacs"].anchor_words(REGISTRY["pacs"].domains) == ("art painting", "cartoon", "photo", "sketch")


def test_pacs_mini_opens_from_the_dataset_folder_or_its_parent(pacs_mini, tmp_path):
    direct = open_dataset("pacs", pacs_mini)
    (tmp_path / "PACS").symlink_to(pacs_mini)
    via_parent = open_dataset("pacs", tmp_path)
    assert len(direct.files) == len(via_parent.files) == 1120
    assert direct.domains == ("art_painting", "cartoon", "photo", "sketch")
    first = direct.files[0]
    assert first.path.startswith("art_painting/dog/") and first.label == 0
    assert {f.path.rsplit(".", 1)[1] for f in direct.files if f.domain == "sketch"} == {"png"}


def test_missing_domains_are_dropped_with_a_warning(pacs_mini, tmp_path, caplog):
    for domain in ("photo", "sketch"):
        (tmp_path / domain).symlink_to(pacs_mini / domain)
    with caplog.at_level(logging.WARNING, "vl2v.data"):
        dataset = open_dataset("pacs", tmp_path)
    assert dataset.domains == ("photo", "sketch")
    assert "['art_painting', 'cartoon'] are missing" in caplog.text


def test_uneven_imagefolder_is_legal(pacs_mini, tmp_path):
    shutil.copytree(pacs_mini / "photo" / "dog", tmp_path / "day" / "dog")
    shutil.copytree(pacs_mini / "photo" / "horse", tmp_path / "day" / "horse")
    shutil.copytree(pacs_mini / "sketch" / "dog", tmp_path / "night" / "dog")
    dataset = open_dataset("imagefolder", tmp_path)
    assert dataset.domains == ("day", "night") and dataset.classes == ("dog", "horse")
    assert sum(f.domain == "night" for f in dataset.files) == 40


def test_a_domains_unlabelled_folder_holds_images_without_a_class(pacs_mini, tmp_path):
    shutil.copytree(pacs_mini / "photo" / "dog", tmp_path / "PACS" / "photo" / "dog")
    shutil.copytree(pacs_mini / "photo" / "horse", tmp_path / "PACS" / "photo" / "_unlabelled")
    for name in ("pacs", "imagefolder"):  # a registered dataset, and any image folder
        dataset = open_dataset(name, tmp_path / "PACS")
        assert "_unlabelled" not in dataset.classes
        unlabelled = [f for f in dataset.files if f.label is None]
        assert len(unlabelled) == 40 and all(f.path.startswith("photo/_unlabelled/") for f in unlabelled)
        assert {f.label for f in dataset.files if f not in unlabelled} == {dataset.classes.index("dog")}
    (tmp_path / "PACS" / "photo" / "dog").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="no images"):
        open_dataset("pacs", tmp_path / "PACS")  # unlabelled images alone train nothing


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: os.makedirs(root / "stuff"), "holds neither PACS/"),
        (lambda root: os.makedirs(root / "PACS" / "photo" / "unicorn"), "not pacs classes"),
        (lambda root: os.makedirs(root / "PACS" / "photo" / "dog"), "no images"),
    ],
)
def test_malformed_folders_name_the_expected_layout_and_source(tmp_path, setup, fragment):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=fragment) as raised:
        open_dataset("pacs", root)
    message = str(raised.value)
    assert "<domain>/<class>/<image>" in message and "Source:" in message


def test_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(DatasetError, match="choose one of .*'officehome'.*'imagefolder'"):
        open_dataset("office-home", tmp_path)


def test_an_image_folder_one_level_too_high_or_too_low_is_refused_with_the_fix(pacs_mini, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PACS").symlink_to(pacs_mini)
    with pytest.raises(DatasetError, match="looks one folder too high") as raised:
        open_dataset("imagefolder", tmp_path / "data")
    assert "are the names of domains" in str(
        raised.value
    ) and f"Point --data-dir at {tmp_path / 'data' / 'PACS'}" in str(raised.value)
    nameless = tmp_path / "mine" / "studio" / "set_a" / "cats"  # classes holding folders, not images
    nameless.mkdir(parents=True)
    shutil.copy(next((pacs_mini / "photo" / "dog").glob("*.jpg")), nameless / "a.jpg")
    with pytest.raises(DatasetError, match="hold no images, only folders"):
        open_dataset("imagefolder", tmp_path / "mine")
    with pytest.raises(DatasetError, match=f"looks one folder too low.*Point --data-dir at {pacs_mini}"):
        open_dataset("imagefolder", pacs_mini / "photo")
    assert open_dataset("imagefolder", pacs_mini).domains == ("art_painting", "cartoon", "photo", "sketch")
