"""Architectures by name, in families with sizes, so "small vs large" is a string (timm-style).

    linear                         one linear layer on the flattened image or feature vector
    mlp-s / mlp-m / mlp-l          fully connected on the flattened image or feature vector
    cnn-s / cnn-m / cnn-l          plain conv-pool stacks, 2 / 2 / 3 conv blocks
    resnet-s / resnet-m / resnet-l CIFAR-style ResNets of depth 8 / 20 / 56 (He et al. 2016, sec. 4.2)
    torchvision:NAME               any torchvision classifier, first conv and head fitted to the data

Every builder takes (in_channels, image_size, n_classes) and returns an nn.Module whose
forward gives logits (batch, n_classes). `build_for_input` builds for any input shape: images
(channels, height, width) take every architecture, feature vectors (width,) take `linear` and
the MLPs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .errors import InputError, UnknownNameError

__all__ = [
    "CNN",
    "FEATURE_ARCHS",
    "MLP",
    "BasicBlock",
    "CifarResNet",
    "Columns",
    "MaxPool2x2",
    "adapt_first_conv",
    "architecture_names",
    "build_for_input",
    "build_model",
    "family",
    "folded_for_inference",
    "head_layer",
    "is_convolutional",
    "register",
    "torchvision_model",
]

Builder = Callable[[int, int, int], nn.Module]
_REGISTRY: dict[str, Builder] = {}
FEATURE_ARCHS = ("linear", "mlp-s", "mlp-m", "mlp-l")
_MLP_HIDDEN = {"linear": [], "mlp-s": [256], "mlp-m": [512, 256], "mlp-l": [1024, 1024, 512]}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return add


def architecture_names() -> list[str]:
    return [*_REGISTRY, "torchvision:NAME"]


def family(name: str) -> str:
    """'cnn-s' -> 'cnn'; 'torchvision:resnet18' -> 'torchvision:resnet18'."""
    return name.rsplit("-", 1)[0] if name in _REGISTRY else name


def build_model(name: str, in_channels: int, image_size: int, n_classes: int) -> nn.Module:
    """Build an untrained model by registry name (see the module docstring)."""
    if name in _REGISTRY:
        return _REGISTRY[name](in_channels, image_size, n_classes)
    if name.startswith("torchvision:"):
        return torchvision_model(name.split(":", 1)[1], in_channels, n_classes)
    raise UnknownNameError(f"unknown architecture {name!r}; choose from {', '.join(architecture_names())}")


def build_for_input(name: str, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build `name` for inputs of `input_shape`: (channels, height, width) or (features,)."""
    if len(input_shape) == 3:
        return build_model(name, input_shape[0], input_shape[1], n_classes)
    if name in _MLP_HIDDEN:
        return MLP(int(input_shape[0]), _MLP_HIDDEN[name], n_classes)
    if name not in _REGISTRY and not name.startswith("torchvision:"):
        build_model(name, 1, 1, n_classes)  # the unknown-name error
    raise InputError(f"{name} needs images; feature and text data train {', '.join(FEATURE_ARCHS)}")


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def head_layer(model: nn.Module) -> nn.Linear | None:
    """The classifier head: the last `nn.Linear` a model registers (None if it has none). Its
    input is the member's embedding of a sample, what the neighbourhood scores read."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def folded_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of one of our CNNs or ResNets with each BatchNorm folded into the
    convolution before it (same predictions to float rounding; 1.1-1.3x faster inference,
    bench/README.md); any other model as it is. Only these families are folded: in them a
    BatchNorm registered right after a Conv2d is the one applied to its output."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not isinstance(model, (CNN, CifarResNet)) or not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(parent, norm_name, nn.Identity())
    return folded.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- MLP
class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], n_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


for _name in ("linear", "mlp-s", "mlp-m", "mlp-l"):
    register(_name)(lambda c, s, k, hidden=_MLP_HIDDEN[_name]: MLP(c * s * s, hidden, k))


class Columns(nn.Module):
    """Keeps a fixed subset of the input features (a member's random subspace), then `model`."""

    def __init__(self, columns: torch.Tensor, model: nn.Module):
        super().__init__()
        self.register_buffer("columns", columns.long())
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.index_select(1, self.columns))


# ----------------------------------------------------------------------------- CNN
class MaxPool2x2(nn.MaxPool2d):
    """nn.MaxPool2d(2), faster where no gradient is wanted on the CPU (the eval pass).

    There ATen's pool still computes every window's arg-max index for a backward that never
    comes; elementwise maxima give the same values (NaN too) in 0.35-0.55 of the time on
    channels_last batches (bench/README.md). Training takes the standard path.
    """

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return super().forward(x)
        n, c, h, w = x.shape
        if h % 2 == 0 and w % 2 == 0 and x.is_contiguous(memory_format=torch.channels_last):
            # (n, h, w, c) in memory: the maximum of pairs of rows, then of neighbouring
            # pixels' channel vectors, each over long contiguous runs.
            pairs = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)
            rows = torch.maximum(pairs[:, :, 0], pairs[:, :, 1])
            return torch.maximum(rows[..., :c], rows[..., c:]).permute(0, 3, 1, 2)
        x = x[..., : h // 2 * 2, : w // 2 * 2]  # floor, as the pool does
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]), torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class CNN(nn.Module):
    """conv3x3-(BatchNorm)-maxpool-ReLU blocks, then a linear head (BatchNorm from the medium
    size up). Pooling before the ReLU gives the same values and gradients (both keep the order
    of their inputs) with the ReLU on a quarter of the values."""

    def __init__(self, in_channels: int, image_size: int, n_classes: int, widths: list[int], hidden: int | None, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for width in widths:
            layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers += [MaxPool2x2(), nn.ReLU(inplace=True)]
            channels, size = width, size // 2
        if size < 1:
            raise InputError(f"images of {image_size}px are too small for {len(widths)} pooling steps")
        layers.append(nn.Flatten())
        features = channels * size * size
        if hidden:
            layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True)]
            features = hidden
        layers.append(nn.Linear(features, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("cnn-s")(lambda c, s, k: CNN(c, s, k, [16, 32], None, False))
register("cnn-m")(lambda c, s, k: CNN(c, s, k, [32, 64], 128, True))
register("cnn-l")(lambda c, s, k: CNN(c, s, k, [64, 128, 256], 256, True))


# ----------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Depth 6n+2: a 3x3 stem, three stages of n basic blocks (16, 32, 64 channels), pool, linear."""

    def __init__(self, in_channels: int, n_classes: int, depth: int):
        super().__init__()
        if (depth - 2) % 6:
            raise InputError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        stages, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(blocks):
                stages.append(BasicBlock(channels, width, stride if index == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


for _size, _depth in {"s": 8, "m": 20, "l": 56}.items():
    register(f"resnet-{_size}")(lambda c, s, k, depth=_depth: CifarResNet(c, k, depth))


# ----------------------------------------------------------------------------- torchvision
def torchvision_model(name: str, in_channels: int, n_classes: int) -> nn.Module:
    """A torchvision classifier with its first conv taking `in_channels` and a head of n_classes."""
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=n_classes)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models))[:12])
        raise UnknownNameError(f"unknown torchvision model {name!r} (e.g. {known}, ...)") from None
    if in_channels != 3:
        adapt_first_conv(model, in_channels)
    return model


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d by one that takes `in_channels` (weights averaged over RGB when set)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                replacement = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups if child.groups == 1 else in_channels,
                    child.bias is not None,
                )
                with torch.no_grad():
                    replacement.weight.copy_(child.weight.mean(dim=1, keepdim=True).expand_as(replacement.weight))
                    if child.bias is not None:
                        replacement.bias.copy_(child.bias)
                setattr(parent, child_name, replacement)
                return
    raise InputError("the model has no Conv2d layer to adapt to the data's channels")
