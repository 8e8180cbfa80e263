"""The QuickBooks Online side: API client, typed records, query building, OAuth tokens."""
