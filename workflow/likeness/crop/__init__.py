"""Crop: every face cut square from its original photo, with its quality measures."""
