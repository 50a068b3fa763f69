"""Export: a person's face regions from the photo library's database (PhotoPrism, Immich, digiKam)."""
