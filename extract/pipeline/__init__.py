"""The job (manifest, plan, commit) and the Ray backend (the only module that imports Ray)."""
