"""The dataset registry (DomainBed's five benchmarks and any image folder) and enumeration of their files.

Layout: `<data-dir>/<Folder>/<domain>/<class>/<image>`, or `<data-dir>/<domain>/<class>/<image>` when
`--data-dir` already names the dataset folder. Domains and classes are sorted by name, as DomainBed does.

A domain may also hold images nobody labelled, in `<domain>/_unlabelled/`: the teacher's answer is all a student
learns from them (distillation on unlabelled images, as Beyer et al., CVPR 2022, distil on images without labels).
They are bought like the others, and never evaluated.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import world as demo_world
from .layout import UNLABELLED

log = logging.getLogger("vl2v.data")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class DatasetError(ValueError):
    """The dataset name or folder is not usable; the message says what was expected and where data comes from."""


@dataclass(frozen=True)
class Archive:
    """One public download: the file to fetch and the folder it unpacks to (renamed to the dataset's folder)."""

    url: str
    filename: str
    unpacks_to: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its folder name, domains and classes as DomainBed names them, and its source."""

    name: str
    folder: str
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    source: str
    archives: tuple[Archive, ...] = ()
    # Published image counts per domain, checked (as a warning) after a download.
    counts: dict[str, int] = field(default_factory=dict)
    # RISE's anchor words: None means "the source-domain names" (PACS, OfficeHome, DomainNet).
    anchors: tuple[str, ...] | None = None
    renames: dict[str, str] = field(default_factory=dict)

    def prompt_name(self, class_name: str) -> str:
        """The class as words for a prompt: `Alarm_Clock` -> "alarm clock", `TV` stays "TV"."""
        return prompt_words(self.renames.get(class_name, class_name))

    def anchor_words(self, domains: tuple[str, ...]) -> tuple[str, ...]:
        return self.anchors if self.anchors is not None else tuple(prompt_words(d) for d in domains)


def prompt_words(name: str) -> str:
    words = re.split(r"[_\s]+", name.strip())
    return " ".join(w if (w.isupper() and len(w) > 1) else w.lower() for w in words if w)


def _drive(file_id: str, filename: str, unpacks_to: str | None = None) -> Archive:
    url = f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"
    return Archive(url, filename, unpacks_to)


_DOMAINNET_CLASSES = """
The_Eiffel_Tower The_Great_Wall_of_China The_Mona_Lisa aircraft_carrier airplane alarm_clock ambulance angel
animal_migration ant anvil apple arm asparagus axe backpack banana bandage barn baseball baseball_bat basket
basketball bat bathtub beach bear beard bed bee belt bench bicycle binoculars bird birthday_cake blackberry
blueberry book boomerang bottlecap bowtie bracelet brain bread bridge broccoli broom bucket bulldozer bus bush
butterfly cactus cake calculator calendar camel camera camouflage campfire candle cannon canoe car carrot castle
cat ceiling_fan cell_phone cello chair chandelier church circle clarinet clock cloud coffee_cup compass computer
cookie cooler couch cow crab crayon crocodile crown cruise_ship cup diamond dishwasher diving_board dog dolphin
donut door dragon dresser drill drums duck dumbbell ear elbow elephant envelope eraser eye eyeglasses face fan
feather fence finger fire_hydrant fireplace firetruck fish flamingo flashlight flip_flops floor_lamp flower
flying_saucer foot fork frog frying_pan garden garden_hose giraffe goatee golf_club grapes grass guitar hamburger
hammer hand harp hat headphones hedgehog helicopter helmet hexagon hockey_puck hockey_stick horse hospital
hot_air_balloon hot_dog hot_tub hourglass house house_plant hurricane ice_cream jacket jail kangaroo key keyboard
knee knife ladder lantern laptop leaf leg light_bulb lighter lighthouse lightning line lion lipstick lobster
lollipop mailbox map marker matches megaphone mermaid microphone microwave monkey moon mosquito motorbike mountain
mouse moustache mouth mug mushroom nail necklace nose ocean octagon octopus onion oven owl paint_can paintbrush
palm_tree panda pants paper_clip parachute parrot passport peanut pear peas pencil penguin piano pickup_truck
picture_frame pig pillow pineapple pizza pliers police_car pond pool popsicle postcard potato power_outlet purse
rabbit raccoon radio rain rainbow rake remote_control rhinoceros rifle river roller_coaster rollerskates sailboat
sandwich saw saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep shoe shorts shovel
sink skateboard skull skyscraper sleeping_bag smiley_face snail snake snorkel snowflake snowman soccer_ball sock
speedboat spider spoon spreadsheet square squiggle squirrel stairs star steak stereo stethoscope stitches
stop_sign stove strawberry streetlight string_bean submarine suitcase sun swan sweater swing_set sword syringe
t-shirt table teapot teddy-bear telephone television tennis_racquet tent tiger toaster toe toilet tooth
toothbrush toothpaste tornado tractor traffic_light train tree triangle trombone truck trumpet umbrella underwear
van vase violin washing_machine watermelon waterslide whale wheel windmill wine_bottle wine_glass wristwatch yoga
zebra zigzag
""".split()

_OFFICEHOME_CLASSES = """
Alarm_Clock Backpack Batteries Bed Bike Bottle Bucket Calculator Calendar Candles Chair Clipboards Computer Couch
Curtains Desk_Lamp Drill Eraser Exit_Sign Fan File_Cabinet Flipflops Flowers Folder Fork Glasses Hammer Helmet
Kettle Keyboard Knives Lamp_Shade Laptop Marker Monitor Mop Mouse Mug Notebook Oven Pan Paper_Clip Pen Pencil
Postit_Notes Printer Push_Pin Radio Refrigerator Ruler Scissors Screwdriver Shelf Sink Sneakers Soda Speaker Spoon
TV Table Telephone ToothBrush Toys Trash_Can Webcam
""".split()

_VISDA = "https://csr.bu.edu/ftp/visda/2019/multi-source"

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="pacs",
            folder="PACS",
            domains=("art_painting", "cartoon", "photo", "sketch"),
            classes=("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
            source="Li et al., ICCV 2017 (DomainBed's download.py); `vl2v data download pacs`",
            archives=(_drive("1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd", "PACS.zip", "kfold"),),
            counts={"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929},
        ),
        DatasetSpec(
            name="vlcs",
            folder="VLCS",
            domains=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
            classes=("bird", "car", "chair", "dog", "person"),
            source="Fang et al., ICCV 2013 (DomainBed's download.py); `vl2v data download vlcs`",
            archives=(_drive("1skwblH1_okBwxWxmRsp9_qi15hyPpxg8", "VLCS.tar.gz"),),
            counts={"Caltech101": 1415, "LabelMe": 2656, "SUN09": 3282, "VOC2007": 3376},
            anchors=("bright photo", "corrupted photo", "dark photo", "good photo"),
        ),
        DatasetSpec(
            name="officehome",
            folder="office_home",
            domains=("Art", "Clipart", "Product", "Real World"),
            classes=tuple(_OFFICEHOME_CLASSES),
            source="Venkateswara et al., CVPR 2017 (DomainBed's download.py); `vl2v data download officehome`",
            archives=(_drive("1uY0pj7oFsjMxRwaD3Sxy0jgel0fsYXLC", "office_home.zip", "OfficeHomeDataset_10072016"),),
            counts={"Art": 2427, "Clipart": 4365, "Product": 4439, "Real World": 4357},
            renames={"Postit_Notes": "post-it notes", "Flipflops": "flip flops", "ToothBrush": "toothbrush"},
        ),
        DatasetSpec(
            name="terra_incognita",
            folder="terra_incognita",
            domains=("location_100", "location_38", "location_43", "location_46"),
            classes=("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"),
            source="Beery et al., ECCV 2018; built from the Caltech Camera Traps release by DomainBed's download.py "
            "(no archive in DomainBed layout exists, so `vl2v data download` cannot fetch it)",
            anchors=("bright photo", "corrupted photo", "dark photo", "good photo"),
        ),
        DatasetSpec(
            name="demo",
            folder="vl2v_demo",
            domains=demo_world.DOMAINS,
            classes=demo_world.CLASSES,
            source="generated by `vl2v demo` (cache/data/world.py), deterministic from a seed",
        ),
        DatasetSpec(
            name="domainnet",
            folder="domain_net",
            domains=("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
            classes=tuple(_DOMAINNET_CLASSES),
            source="Peng et al., ICCV 2019 (VisDA 2019 archives); `vl2v data download domainnet`",
            archives=tuple(
                Archive(f"{_VISDA}/{'groundtruth/' if d in ('clipart', 'painting') else ''}{d}.zip", f"{d}.zip")
                for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
            ),
            counts={
                "clipart": 48129,
                "infograph": 51605,
                "painting": 72266,
                "quickdraw": 172500,
                "real": 172947,
                "sketch": 69128,
            },
            renames={"teddy-bear": "teddy bear"},
        ),
    )
}
IMAGEFOLDER = "imagefolder"


def dataset_names() -> list[str]:
    return [*REGISTRY, IMAGEFOLDER]


def get_spec(name: str) -> DatasetSpec | None:
    """The registered spec, or None for `imagefolder`; an unknown name lists the valid ones."""
    if name == IMAGEFOLDER:
        return None
    if name not in REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {dataset_names()}")
    return REGISTRY[name]


@dataclass(frozen=True)
class ImageFile:
    """One file of the dataset: its path relative to the dataset root, its domain and its class (None: an image
    of the domain's `_unlabelled/` folder)."""

    path: str
    domain: str
    label: int | None


@dataclass(frozen=True)
class Dataset:
    """A dataset found on disk: the registered facts plus what the folder actually holds."""

    name: str
    root: Path
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    class_prompts: tuple[str, ...]
    anchors: tuple[str, ...]
    files: tuple[ImageFile, ...]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "root": str(self.root),
            "domains": list(self.domains),
            "classes": list(self.classes),
            "class_prompts": list(self.class_prompts),
        }


def open_dataset(name: str, data_dir: Path) -> Dataset:
    """Find `name` under `data_dir` (the dataset folder itself, or its parent) and list its images.

    Domains missing from the folder are dropped with a warning; a class missing from one domain is legal.

    Raises:
        DatasetError: unknown name, missing folder, or no registered domain in it; the message names the layout.
    """
    spec = get_spec(name)
    root = _find_root(spec, Path(data_dir).expanduser())
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if spec is None:
        domains, classes = tuple(present), tuple(sorted({c.name for d in present for c in _class_dirs(root / d)}))
        _check_image_folder_depth(root, domains)
        if not domains or not classes:
            raise DatasetError(f"{root}: no <domain>/<class>/<image> folders; {_layout(None)}")
        prompts = tuple(prompt_words(c) for c in classes)
        anchors = tuple(prompt_words(d) for d in domains)
    else:
        missing = [d for d in spec.domains if d not in present]
        domains = tuple(d for d in spec.domains if d in present)
        if not domains:
            raise DatasetError(f"{root} holds none of {name}'s domains {list(spec.domains)}; {_layout(spec)}")
        if missing:
            log.warning("%s: domains %s are missing from %s; using %s", name, missing, root, list(domains))
        classes = spec.classes
        unknown = sorted({c.name for d in domains for c in _class_dirs(root / d)} - set(classes))
        if unknown:
            raise DatasetError(f"{root}: class folders {unknown[:5]} are not {name} classes; {_layout(spec)}")
        prompts = tuple(spec.prompt_name(c) for c in classes)
        anchors = spec.anchor_words(spec.domains)
    files = tuple(_files(root, domains, classes))
    if not any(f.label is not None for f in files):
        raise DatasetError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}); {_layout(spec)}")
    _warn_of_empty_cells(root, files, domains, classes)
    return Dataset(name, root, domains, classes, prompts, anchors, files)


def _warn_of_empty_cells(
    root: Path, files: tuple[ImageFile, ...], domains: tuple[str, ...], classes: tuple[str, ...]
) -> None:
    """A class with no image in a domain is legal (DomainNet has some), but a student never sees it there and
    its accuracy on that domain counts it nowhere: say so, once per domain."""
    present = {(f.domain, f.label) for f in files if f.label is not None}
    for domain in domains:
        absent = [c for label, c in enumerate(classes) if (domain, label) not in present]
        if absent:
            log.warning("%s: domain %s has no images of %d class(es): %s", root, domain, len(absent), absent[:8])


def _check_image_folder_depth(root: Path, domains: tuple[str, ...]) -> None:
    """Refuse an image folder given one level too high or too low, which would silently turn domains into
    classes (or classes into domains)."""
    known_domains = {d.lower() for spec in REGISTRY.values() for d in spec.domains}
    for domain in domains:
        classes = _subdirs(root / domain)
        if any(_has_images(c) for c in classes) or not classes:
            continue
        names = [c.name for c in classes]
        looks = "are the names of domains" if any(n.lower() in known_domains for n in names) else "hold no images"
        raise DatasetError(
            f"{root} looks one folder too high: the 'classes' of {domain!r} ({', '.join(names[:4])}) {looks}, only "
            f"folders. Point --data-dir at {root / domain} (the folder whose subfolders are the domains)"
        )
    if domains and all(_has_images(root / d) and not _subdirs(root / d) for d in domains):
        raise DatasetError(
            f"{root} looks one folder too low: its subfolders ({', '.join(domains[:4])}) hold images directly, as "
            f"classes do. Point --data-dir at {root.parent} (the folder whose subfolders are the domains)"
        )


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def _find_root(spec: DatasetSpec | None, data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise DatasetError(f"data folder {data_dir} does not exist; {_layout(spec)}")
    if spec is None:
        return data_dir
    if (data_dir / spec.folder).is_dir():
        return data_dir / spec.folder
    if any((data_dir / d).is_dir() for d in spec.domains):
        return data_dir
    raise DatasetError(f"{data_dir} holds neither {spec.folder}/ nor any of {list(spec.domains)}; {_layout(spec)}")


def _layout(spec: DatasetSpec | None) -> str:
    if spec is None:
        return "expected <data-dir>/<domain>/<class>/<image>"
    return (
        f"expected <data-dir>/{spec.folder}/<domain>/<class>/<image> (or --data-dir pointing at {spec.folder}/) "
        f"with domains {list(spec.domains)}. Source: {spec.source}"
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_dirs(domain: Path) -> list[Path]:
    return [p for p in _subdirs(domain) if p.name != UNLABELLED]


def _files(root: Path, domains: tuple[str, ...], classes: tuple[str, ...]) -> Iterator[ImageFile]:
    """Every image, domain by domain: each class's, then the domain's unlabelled ones (label None)."""
    index = {c: i for i, c in enumerate(classes)}
    for domain in domains:
        folders: list[tuple[Path, int | None]] = [(d, index[d.name]) for d in _class_dirs(root / domain)]
        folders += [(root / domain / UNLABELLED, None)] if (root / domain / UNLABELLED).is_dir() else []
        for folder, label in folders:
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith("."):
                    yield ImageFile(path.relative_to(root).as_posix(), domain, label)
