"""Study reports: per-cell statistics (paired tests, Holm correction) and table renderers."""
