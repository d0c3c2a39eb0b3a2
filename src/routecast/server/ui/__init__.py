"""The dashboard and routing debugger served at ``/ui`` (see :mod:`.views` for the pages).

- :mod:`.queries`: read-only SQL over the request log;
- :mod:`.svg`: the charts, drawn on the server as SVG;
- :mod:`.whatif`: what each endpoint would do with a prompt, calling no model;
- :mod:`.views`: the pages, their access rule, and the JSON story of one request.

Nothing here is on the completion path: the pages read the log the server already writes and
the state it already keeps. ``ui.enabled: false`` in the config leaves the routes out.
"""
