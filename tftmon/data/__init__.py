"""Data in: the fleet simulator, Great Expectations validation and the generated contract docs."""
