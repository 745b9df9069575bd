"""A run's config: every key against its part's schema, the checks across keys, what may share a pack."""
