"""The plan language (one per-layer quantity as text: memory lengths, ranges, sinks, compression) and receptive
fields as arithmetic. Knows no attention variant and no model."""
