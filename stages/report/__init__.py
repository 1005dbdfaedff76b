"""Paper-style tables and figures over all student runs."""
