"""Data a run reads: datasets over the feature cache on a fixed crop/segment grid (splits, labels,
collation), each item's role (train, val, test or the unlabelled transfer set) and the
training-time augmentation of its cells."""
