"""Worker processes the control runs as its children with `--local` (trainers, batch workers)."""
