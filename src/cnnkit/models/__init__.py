"""Model builders: our own families register in cnnkit.registry; backbones come from timm/torchvision."""

from cnnkit.models import tiny_cnn  # noqa: F401  (registers tiny_cnn)
