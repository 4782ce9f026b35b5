"""Numbered SQL migrations, applied in order by `vpsmon db migrate` and on start."""
