"""Data a run reads: datasets over the feature cache on a fixed crop/segment grid (splits, labels,
collation) and the training-time augmentation of its cells."""
