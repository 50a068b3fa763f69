"""Select: the good faces that really are the person, ranked and de-duplicated."""
