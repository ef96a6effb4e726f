"""cnnkit: the whole CNN computer-vision workflow in one package and one command-line tool."""

from cnnkit.version import __version__


def __getattr__(name: str):
    # importing torch takes seconds: load the API only when it is used (keeps `cnnkit --help` fast)
    if name in ("Classifier", "Embedder"):
        from cnnkit import api

        return getattr(api, name)
    if name == "Detector":
        from cnnkit.detection_api import Detector

        return Detector
    if name == "Segmenter":
        from cnnkit.segmentation_api import Segmenter

        return Segmenter
    if name == "InstanceSegmenter":
        from cnnkit.instance_api import InstanceSegmenter

        return InstanceSegmenter
    if name == "distill":
        from cnnkit.distill_api import distill

        return distill
    raise AttributeError(name)


__all__ = ["Classifier", "Detector", "Embedder", "InstanceSegmenter", "Segmenter", "__version__", "distill"]
