"""imagefactory: build container image families from recipe classes with buildah."""
