"""Frozen schema migrations, one module per version and dialect.

Each module is named C{v<NNNN>_<name>_<dialect>} (dialect C{postgresql} or
C{sqlite}) and defines C{VERSION}, C{NAME} and C{SQL}: statements separated
by semicolons at the end of a line, without parameters.  Both dialects must
offer the same versions.  L{b2bua.db.migrations} discovers and applies them.
"""
