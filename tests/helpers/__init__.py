"""Plain helper functions shared by test folders (no fixtures here)."""
