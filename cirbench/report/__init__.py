"""Reports of finished runs: paper-style tables, the noise-robustness table, plots."""
