"""A WD14 tagger's two files and its tag categories: the facts the tagger, the caption rules and the
offline stand-in all build on (one home, below likeness.caption.model and its stand-in)."""

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
RATING_CATEGORY = 9
GENERAL_CATEGORY = 0
CHARACTER_CATEGORY = 4
