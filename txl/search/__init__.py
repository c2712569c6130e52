"""The plan search: what it chooses per layer (choices), the plans it is measured against (references), the
search itself (search) and its results (results)."""
