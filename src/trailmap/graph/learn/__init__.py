"""Building the graph: one module per source (spans, the servicegraph connector), and pairing."""
