"""The 4D EMR side: HTTP client (`client`) and typed records (`records`)."""
