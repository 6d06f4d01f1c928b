import pytest
import torch
from torch import nn

from sktransfer.distillation.students import (
    MLP,
    SmallCNN,
    StudentTransform,
    build_student,
    count_parameters,
    multiply_adds,
    reset_parameters,
)


def test_mlp_name_gives_those_widths():
    student = build_student("mlp-800-800", 10, random_state=0)
    module = student.module
    out = module(torch.zeros(2, 784))
    assert out.shape == (2, 10)
    widths = [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]
    assert widths == [800, 800, 10]
    assert count_parameters(module) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    assert student.takes_vectors


def test_cnn_names_give_those_channel_widths():
    student = build_student("cnn-8-16", 3, random_state=0)
    convs = [m.out_channels for m in student.module.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [8, 16]
    assert student.module(torch.zeros(2, 3, 20, 20)).shape == (2, 3)
    assert not student.takes_vectors
    small = build_student("cnn-small", 5).module
    widths = [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [16, 32, 64, 128]


def test_torchvision_student_is_random_with_n_classes():
    student = build_student("resnet18", 4, random_state=0)
    assert student.module.fc.out_features == 4
    assert student.transform.crop_size == [224]


def test_module_student_is_copied():
    module = nn.Linear(4, 2)
    student = build_student(module, 2)
    assert student.module is not module
    assert student.takes_vectors


def test_same_seed_same_student():
    a = build_student("cnn-8-16", 3, random_state=1).module.state_dict()
    b = build_student("cnn-8-16", 3, random_state=1).module.state_dict()
    c = build_student("cnn-8-16", 3, random_state=2).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", ["mlp-", "cnn-0-4", "resnet-18", 3])
def test_bad_student_names_are_explained(name):
    with pytest.raises((ValueError, TypeError), match="(?i)student"):
        build_student(name, 2)


def test_typo_gets_a_suggestion():
    with pytest.raises(ValueError, match="Did you mean"):
        build_student("cnn-smal", 2)


def test_transform_scales_resizes_and_normalises():
    images = torch.full((2, 3, 40, 30), 255, dtype=torch.uint8)
    out = StudentTransform(16, mean=(0.5,) * 3, std=(0.5,) * 3)(images)
    assert out.shape == (2, 3, 16, 16)
    assert torch.allclose(out, torch.ones_like(out))
    single = StudentTransform(None, mean=None)(torch.zeros(3, 5, 5, dtype=torch.uint8))
    assert single.dtype == torch.float32 and single.shape == (3, 5, 5)


def test_multiply_adds_of_linear_layers():
    module = MLP((8,), 2, in_features=4)
    assert multiply_adds(module, torch.zeros(1, 4)) == 4 * 8 + 8 * 2


def test_multiply_adds_of_a_conv():
    module = SmallCNN((4,), 2, in_channels=1)
    conv = 10 * 10 * 4 * 9
    assert multiply_adds(module, torch.zeros(1, 1, 10, 10)) == conv + 4 * 2


def test_reset_parameters_gives_fresh_weights():
    module = MLP((8,), 2, in_features=4)
    before = [p.clone() for p in module.parameters()]
    reset_parameters(module, random_state=12345)  # conftest seeds torch with 0 before tests
    after = list(module.parameters())
    assert not any(torch.equal(a, b) for a, b in zip(before, after))


def test_mlp_dropout_layers():
    module = MLP((8, 8), 2, dropout=0.5, input_dropout=0.2, in_features=4)
    rates = [m.p for m in module.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.2, 0.5, 0.5]
