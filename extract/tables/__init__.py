"""Output tables: schemas, rows -> Arrow, the run session and writer, the catalog, run planning."""
