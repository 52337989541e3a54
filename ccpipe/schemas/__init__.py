"""The contract of ccpipe: every message and record as a pydantic v2 model.

Imports nothing of the project. Everything else may import it, from its modules
(``ccpipe.schemas.envelope``, ``ccpipe.schemas.events``, …): this package itself loads none
of them, so a command that needs one small module (``ccpipe submit`` needs the errors and the
spec rules) does not pay for every model.
"""
