"""raytrain-vireid: distributed unsupervised visible-infrared person re-identification."""

__version__ = "0.1.0"

VISIBLE = 0
INFRARED = 1
MODALITY_NAMES = {VISIBLE: "visible", INFRARED: "infrared"}
