"""C{b2bua-admin}: the operator's command-line tool.

It drives the switch through its REST API (L{b2bua.admin.client}), prints
what it got as aligned tables or raw JSON (L{b2bua.admin.output}), and
migrates the provisioning database directly (L{b2bua.admin.migrate}).  The
commands live in L{b2bua.admin.cli}; C{python -m b2bua.admin} runs them too.
"""
