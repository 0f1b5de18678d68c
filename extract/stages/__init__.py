"""The Ray-mapped callable stages: load once in ``__init__``, map a batch of rows in ``__call__``."""
