"""The zoo's model names, without the zoo's imports (the command line's help lists them)."""

__all__ = ["DEFAULT_ARCHS", "PRETRAINED", "SKLEARN"]

SKLEARN = ("sklearn:logreg", "sklearn:forest", "sklearn:tfidf")
PRETRAINED = ("pretrained:efficientnet-lite0",)
DEFAULT_ARCHS = {
    "images": ("mlp-s", "mlp-l", "cnn-s", "cnn-m", "resnet-s", "resnet-m", "sklearn:logreg", "pretrained:efficientnet-lite0"),
    "features": ("linear", "mlp-s", "mlp-l", "sklearn:logreg", "sklearn:forest"),
    "text": ("linear", "mlp-s", "mlp-l", "sklearn:logreg", "sklearn:tfidf"),
}
