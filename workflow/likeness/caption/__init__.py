"""Caption: WD14 tags through ONNX Runtime, plus the trigger word, for every selected face.

captions (the job), rules (caption text from probabilities), probcache (stored probabilities),
tagger (the ONNX Runtime session), preprocess (sd-scripts' image preprocessing), model (which tagger
and its files), standin_tagger (the offline stand-in for tests and the demo).
"""
