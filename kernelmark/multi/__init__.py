"""Several devices: collectives under torchrun, and one run per GPU of a node (--all-gpus)."""
