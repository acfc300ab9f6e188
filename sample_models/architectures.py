"""Model definitions the sample models are built from, looked up by their ``arch`` string.

A sample's meta.json names its architecture with a string such as
``"sample_models.architectures:DigitsCNN"`` or ``"torchvision:resnet18"``. Only the
architectures registered in :data:`ARCHITECTURES` can be built: metadata is data, and
it must not be able to make us import an arbitrary module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ARCHITECTURES", "WIDTH_KWARGS", "DigitsCNN", "build_architecture"]


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digits, sized for a microcontroller (about 40k parameters).

    Only Conv2d / BatchNorm2d / ReLU / MaxPool2d / Flatten / Linear / Dropout, so it
    exports to plain ONNX operators, folds BatchNorm into the convolutions and can be
    channel-pruned (the first convolution and the last Linear are the layers that
    pruning keeps dense). Spatial sizes: 8x8 -> 8x8 -> 4x4 -> 2x2 -> 256 features.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, hidden: int = 64, width: float = 1.0
    ) -> None:
        super().__init__()
        # width scales the convolutions' channels (a student for distillation); 1.0 is
        # the shipped sample.
        c1, c2, c3 = (max(1, round(c * width)) for c in (16, 32, 64))
        self.features = nn.Sequential(
            # Convolutions carry no bias: the BatchNorm that follows has its own shift.
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * 2 * 2, hidden),
            nn.ReLU(inplace=True),
            # About a thousand training images: some regularisation keeps the test margin.
            nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):  # noqa: D102 - the usual nn.Module forward
        return self.classifier(self.features(x))


def _mobilenet_v2(**kwargs) -> nn.Module:
    # Imported lazily: torchvision is heavy and only two samples need it.
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(**kwargs)


def _resnet18(**kwargs) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(**kwargs)


# The architectures a meta.json may name; weights=None is torchvision's default, so
# building one never downloads anything.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "sample_models.architectures:DigitsCNN": DigitsCNN,
    "torchvision:mobilenet_v2": _mobilenet_v2,
    "torchvision:resnet18": _resnet18,
}

# The keyword that scales an architecture's channel widths, for those that have one
# (torchvision's ResNet-18 has none: its width_per_group applies to bottleneck blocks only).
WIDTH_KWARGS: dict[str, str] = {
    "sample_models.architectures:DigitsCNN": "width",
    "torchvision:mobilenet_v2": "width_mult",
}


def build_architecture(arch: str, **kwargs) -> nn.Module:
    """A freshly initialised module for the registered ``arch`` string.

    Raises:
        KeyError: ``arch`` is not registered; the message lists the ones that are.
    """
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise KeyError(
            f"unknown architecture {arch!r}; registered: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return factory(**kwargs)
