"""gunicorn reads this file by itself when it starts in this directory (or with --chdir here).

So ``gunicorn wsgi:app``, with any ``-k``/``-w``, runs ticker as ``ticker serve`` does.
"""

from ticker.gunicorn_conf import *  # noqa: F403
