"""kgexp: knowledge-graph-embedding link-prediction experiments."""
