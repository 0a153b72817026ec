"""The sandbox worker, a directory run as ``python -I <this directory> CONFIG`` (see ``__main__.py``).

Its modules import each other as top-level modules (``import protocol``), because the worker puts
this directory, not the ``leti_env`` package, on ``sys.path``: the worker never imports the caller's
packages. Only ``protocol`` (framing, no sibling imports) is also imported by the caller's side
(``leti_env.execution.pool``) through this package.
"""
