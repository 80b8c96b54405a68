"""Op definitions: inputs, a higher-precision reference, minimum FLOPs and bytes, and the
backends that implement each op, one op family per module."""
