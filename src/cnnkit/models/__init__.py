"""Model builders. Every family registers its names in cnnkit.registry with the task it serves; importing
this package imports every family module, so the registry's table is complete once anything in
cnnkit.models is imported (registry.py imports no model: the dependency runs one way). Classification
backbones beyond our own come from timm and torchvision (backbones.py)."""

from cnnkit.models import detectors, segmenters, tiny_cnn  # noqa: F401  (their @register decorators fill the table)
