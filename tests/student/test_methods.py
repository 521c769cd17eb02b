"""Each method's loss on tiny tensors, against the formula written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cache.data.prompts import all_prompts
from student.data import UNLABELLED
from student.knowledge import TeacherKnowledge
from student.methods import get_method, method_names
from student.methods.base import Context
from student.models import Backbone

D = C = 3  # teacher dim = number of classes, so identity heads are possible
CLASSES = ["dog", "cat", "cow"]
ANCHORS = ("photo", "sketch")


def knowledge(seed: int = 0) -> TeacherKnowledge:
    g = torch.Generator().manual_seed(seed)
    texts = {p: F.normalize(torch.randn(D, generator=g), dim=0) for p in all_prompts(CLASSES, ANCHORS)}
    return TeacherKnowledge(torch.zeros(0, D), {}, texts, CLASSES, 100.0, {})


def identity_backbone() -> Backbone:
    layer = nn.Linear(D, D, bias=False)  # f(x) = x, with a parameter to train: "images" are (B, D) features
    with torch.no_grad():
        layer.weight.copy_(torch.eye(D))
    return Backbone(layer, D, (0, 0, 0), (1, 1, 1), 8)


def build(name: str, **overrides):
    cls = get_method(name)
    context = Context("pacs", ANCHORS, num_classes=C)
    method = cls(identity_backbone(), knowledge(), cls.Hparams.with_overrides(overrides), context)
    for module in method.modules():  # identity heads and projectors, so the formulas are easy to write
        if isinstance(module, nn.Linear) and module.weight.shape == (D, D) and name != "rise":
            with torch.no_grad():
                module.weight.copy_(torch.eye(D))
                if module.bias is not None:
                    module.bias.zero_()
    return method


def batch(progress: float = 0.9, n: int = 4):
    g = torch.Generator().manual_seed(1)
    return {
        "images": torch.randn(n, D, generator=g),
        "labels": torch.tensor([0, 1, 2, 1][:n] * (n // 4 or 1))[:n],
        "teacher_image": F.normalize(torch.randn(n, D, generator=g), dim=1),
        "progress": torch.tensor(progress),
    }


def one_minus_cos(a, b):
    return (1 - F.cosine_similarity(a, b, dim=1)).mean()


def kd(zt, zs, t):
    pt = (zt / t).softmax(1)
    return t * t * (pt * (pt.log() - (zs / t).log_softmax(1))).sum(1).mean()


def test_the_registry_lists_every_method_and_rejects_others():
    assert set(method_names()) == {"erm", "kd", "rise", "scmd", "adip", "sd"}
    assert [get_method(name).name for name in method_names()] == method_names(), "each module registers its name"
    with pytest.raises(ValueError, match=r"unknown method 'swag'; choose one of"):
        get_method("swag")


def test_erm_is_cross_entropy_of_the_linear_head():
    m, b = build("erm"), batch()
    assert_close(m.loss(b)["loss"], F.cross_entropy(b["images"], b["labels"]))


def test_kd_adds_lambda_times_tempered_kl_to_ce():
    m, b = build("kd"), batch()
    zt = 100.0 * b["teacher_image"] @ m.text.classes.T
    expected = F.cross_entropy(b["images"], b["labels"]) + 0.5 * kd(zt, b["images"], 3.0)
    assert_close(m.loss(b)["loss"], expected)


def test_adip_mixes_image_and_text_cosine_distillation():
    m, b = build("adip"), batch()
    t_y = m.text.classes[b["labels"]]
    expected = 0.5 * one_minus_cos(b["images"], b["teacher_image"]) + 0.5 * one_minus_cos(b["images"], t_y)
    assert_close(m.loss(b)["loss"], expected)
    assert_close(m.predict(b["images"]), 100.0 * F.normalize(b["images"], dim=1) @ m.text.classes.T)


def test_adip_aligns_its_projector_at_its_own_lr_only_when_asked():
    paper = build("adip", lr="2e-4").stages()
    assert [group.get("lr", 2e-4) for stage in paper for group in stage.param_groups] == [2e-4, 2e-4]
    method = build("adip", lr="2e-4", align_lr="3e-3")
    align, distill = method.stages()
    assert [g["lr"] for g in align.param_groups] == [3e-3]
    assert [id(p) for g in align.param_groups for p in g["params"]] == [id(p) for p in method.projector.parameters()]
    assert [g.get("lr") for g in distill.param_groups] == [None], "stage 2 keeps the method's lr"


def test_sd_is_adips_loss_without_a_projector():
    m, b = build("sd", distill_weight="0.25"), batch()
    t_y = m.text.classes[b["labels"]]
    expected = 0.25 * one_minus_cos(b["images"], b["teacher_image"]) + 0.75 * one_minus_cos(b["images"], t_y)
    assert_close(m.loss(b)["loss"], expected)


def test_rise_loss_weights_kd_ce_and_the_two_distances():
    m, b = build("rise"), batch()
    e = m.embed(b["images"])
    z = m.head(e)
    t_bar = m.text.classes
    zt = 100.0 * b["teacher_image"] @ t_bar.T
    anchors = F.normalize(knowledge().anchor_embeddings(list(ANCHORS)), dim=-1)[b["labels"]]
    s = torch.stack([(F.normalize(e[i], dim=0) @ anchors[i].T).softmax(0) for i in range(4)])
    t = torch.stack([(t_bar[b["labels"][i]] @ anchors[i].T).softmax(0) for i in range(4)])
    rd = 10 * ((s - t) ** 2).mean()
    ad = one_minus_cos(e, t_bar[b["labels"]])
    expected = 0.9 * kd(zt, z, 3.0) + 0.1 * F.cross_entropy(z, b["labels"]) + 1.0 * (ad + rd)  # PACS weights
    assert_close(m.loss(b)["loss"], expected)
    assert_close(m.head.weight.detach(), t_bar)  # the head starts at the class text embeddings


def test_rise_relative_distance_is_zero_when_the_student_matches_the_teacher():
    m = build("rise")
    labels = torch.tensor([0, 1, 2])
    assert_close(m.relative_distance(m.text.classes[labels] * 7.0, labels), torch.tensor(0.0), atol=1e-7, rtol=0)


def test_scmd_keeps_exactly_the_hardest_20_percent_then_the_whole_batch():
    m = build("scmd")
    g = torch.Generator().manual_seed(3)
    images, labels = torch.randn(10, D, generator=g), torch.randint(0, C, (10,), generator=g)
    per_sample = F.cross_entropy(images, labels, reduction="none")
    assert set(m.select_hard(images, labels).tolist()) == set(per_sample.argsort(descending=True)[:2].tolist())
    b = {"images": images, "labels": labels, "teacher_image": F.normalize(torch.randn(10, D, generator=g), dim=1)}
    assert float(m.loss(b | {"progress": torch.tensor(0.5)})["kept"]) == 2
    assert float(m.loss(b | {"progress": torch.tensor(0.8)})["kept"]) == 10


def test_scmd_full_batch_loss_matches_the_formula():
    m, b = build("scmd"), batch(progress=0.9)
    zt = 100.0 * b["teacher_image"] @ m.text.classes.T
    z_cm = (1 / 0.07) * F.normalize(b["images"], dim=1) @ m.text.classes.T
    expected = F.cross_entropy(b["images"], b["labels"]) + 0.5 * kd(zt, b["images"], 3.0) + 0.5 * kd(zt, z_cm, 3.0)
    assert_close(m.loss(b)["loss"], expected)
    assert_close(m.log_scale.detach(), torch.tensor(math.log(1 / 0.07)))


LABEL_TERMS = {"ce", "text_distill", "absolute_distance", "relative_distance"}
TEACHER_TERMS = {"kd", "kd_cross_modal", "image_distill"}


@pytest.mark.parametrize("name", ["kd", "rise", "scmd", "adip", "sd"])
def test_an_unlabelled_image_teaches_a_method_through_its_teacher_terms_only(name):
    m, b = build(name), batch(progress=0.9, n=8)
    hidden = b | {"labels": torch.where(torch.arange(8) < 4, b["labels"], UNLABELLED)}  # the last 4: no class
    first_four = b | {k: b[k][:4] for k in ("images", "labels", "teacher_image")}
    mixed, labelled, first = m.loss(hidden), m.loss(b), m.loss(first_four)
    assert set(mixed) & LABEL_TERMS and set(mixed) & TEACHER_TERMS
    for term in set(mixed) & LABEL_TERMS:  # as if the unlabelled images were not in the batch
        assert_close(mixed[term], first[term], msg=term)
    for term in set(mixed) & TEACHER_TERMS:  # as if their classes were known: the teacher's term needs none
        assert_close(mixed[term], labelled[term], msg=term)
    assert get_method(name).learns_unlabelled


def test_erm_is_the_one_method_an_unlabelled_image_cannot_teach():
    assert [name for name in method_names() if not get_method(name).learns_unlabelled] == ["erm"]


def test_scmd_ranks_an_unlabelled_image_by_the_teachers_most_likely_class():
    m = build("scmd")
    g = torch.Generator().manual_seed(3)
    images, teacher = torch.randn(10, D, generator=g), F.normalize(torch.randn(10, D, generator=g), dim=1)
    unlabelled = torch.full((10,), UNLABELLED)
    parts = m.loss({"images": images, "labels": unlabelled, "teacher_image": teacher, "progress": torch.tensor(0.5)})
    assert float(parts["kept"]) == 2 and float(parts["ce"]) == 0 and torch.isfinite(parts["loss"])
    named = m.teacher_logits(teacher).argmax(1)
    hardest = F.cross_entropy(images, named, reduction="none").argsort(descending=True)[:2]
    assert set(m.select_hard(images, named).tolist()) == set(hardest.tolist())


@pytest.mark.parametrize("name", ["erm", "kd", "rise", "scmd", "adip", "sd"])
def test_teacher_tensors_never_carry_gradients(name):
    m, b = build(name), batch()
    teacher = b["teacher_image"].clone().requires_grad_(True)  # even a careless caller's leaf gets none
    m.loss(b | {"teacher_image": teacher})["loss"].backward()
    assert teacher.grad is None
    assert not m.teacher_logits(teacher).requires_grad
    assert not m.text.classes.requires_grad


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"lr": "-1"}, "lr must be > 0"),
        ({"averaging": "ema"}, "averaging must be one of"),
        ({"distill_weight": "2"}, "distill_weight must be in [0, 1]"),
        ({"distill_weight": "much"}, "--set distill_weight=much: expected a float"),
        ({"align_lr": "0"}, "align_lr must be > 0"),
        ({"bogus": "1"}, "--set bogus: unknown hyper-parameter of AdipHparams; valid: ["),
    ],
)
def test_hyper_parameter_overrides_are_validated_naming_the_key(overrides, fragment):
    with pytest.raises(ValueError) as raised:
        get_method("adip").Hparams.with_overrides(overrides)
    assert fragment in str(raised.value)


def test_defaults_follow_the_papers():
    assert get_method("rise").Hparams().optimizer == "sgd" and get_method("rise").Hparams().weight_decay == 5e-4
    assert get_method("scmd").Hparams().averaging == "sma" and get_method("scmd").Hparams().sma_start == 300
    assert get_method("adip").Hparams().averaging == "swad" and get_method("adip").Hparams().lr == 5e-5
    assert get_method("kd").Hparams().temperature == 3.0 and get_method("kd").Hparams().kd_weight == 0.5
