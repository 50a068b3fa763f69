"""Caption: WD14 tags through ONNX Runtime, plus the trigger word, for every selected face."""
