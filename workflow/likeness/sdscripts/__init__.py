"""sd-scripts formats: the files kohya-ss/sd-scripts v0.10.1 reads and writes."""
