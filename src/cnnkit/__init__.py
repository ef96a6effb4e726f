"""cnnkit: the whole CNN computer-vision workflow in one package and one command-line tool."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # importing torch takes seconds: load the API only when it is used (keeps `cnnkit --help` fast)
    if name == "Classifier":
        from cnnkit.api import Classifier

        return Classifier
    raise AttributeError(name)


__all__ = ["Classifier", "__version__"]
