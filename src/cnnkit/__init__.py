"""cnnkit: the whole CNN computer-vision workflow in one package and one command-line tool."""

from cnnkit.version import __version__


def __getattr__(name: str):
    # importing torch takes seconds: load the API only when it is used (keeps `cnnkit --help` fast)
    if name == "Classifier":
        from cnnkit.tasks.classify.api import Classifier

        return Classifier
    if name == "Embedder":
        from cnnkit.tasks.embed.api import Embedder

        return Embedder
    if name == "Detector":
        from cnnkit.tasks.detect.api import Detector

        return Detector
    if name == "Segmenter":
        from cnnkit.tasks.segment.api import Segmenter

        return Segmenter
    if name == "InstanceSegmenter":
        from cnnkit.tasks.instance.api import InstanceSegmenter

        return InstanceSegmenter
    if name == "Tracker":
        from cnnkit.tasks.track.api import Tracker

        return Tracker
    if name == "distill":
        from cnnkit.tasks.distill.api import distill

        return distill
    raise AttributeError(name)


__all__ = ["Classifier", "Detector", "Embedder", "InstanceSegmenter", "Segmenter", "Tracker", "__version__", "distill"]
