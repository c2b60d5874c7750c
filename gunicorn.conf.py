"""gunicorn reads this file by itself when it starts in this directory.

So ``gunicorn wsgi:app`` here, with any ``-k``/``-w``, runs ticker as ``ticker serve``
does.  From another directory, name it: ``gunicorn -c CHECKOUT/gunicorn.conf.py
--chdir CHECKOUT wsgi:app`` (gunicorn looks for it before it applies ``--chdir``).
"""

from ticker.gunicorn_conf import *  # noqa: F403
