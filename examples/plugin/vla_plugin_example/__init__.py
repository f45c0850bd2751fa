"""An example vl-adapters plugin package (see docs/extending.md)."""
