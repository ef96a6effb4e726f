"""Model builders. Every family registers its names in cnnkit.registry with the task it serves; importing
this package imports every family module, so the registry's table is complete once anything in
cnnkit.models is imported (registry.py imports no model: the dependency runs one way). Classification
backbones beyond our own come from timm and torchvision (backbones.py)."""

import sys

import torch.nn as nn

from cnnkit.models import detectors, segmenters, tiny_cnn  # noqa: F401  (their @register decorators fill the table)
from cnnkit.models.dbnet import DBNet
from cnnkit.models.segmenters import FCN
from cnnkit.models.ssl import SSLNet
from cnnkit.models.yolo import YoloDetector


def backbone_module(net: nn.Module) -> str | None:
    """The submodule that is the backbone in transfer learning (--backbone-from fills it, --transfer
    freezes it, everything outside it is the head), or None for a classifier, whose head is its
    classifier layer. Read from the network's type, so nothing rides on the module as an attribute."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.ssd import SSD

    if isinstance(net, (YoloDetector, FCN)):
        return net.backbone_module
    if isinstance(net, (DBNet, SSLNet)):
        return "backbone"
    if isinstance(net, GeneralizedRCNN):
        return "backbone.body"
    if isinstance(net, SSD):
        return "backbone.features"
    smp = sys.modules.get("segmentation_models_pytorch")  # imported by now if the net is one of its models
    if smp is not None and isinstance(net, smp.base.SegmentationModel):
        return "encoder.model"  # smp keeps the timm model there, its tensors named as timm's
    return None
