"""qsave annotate: the rating web app of the paper's annotation workflow (Sec. 3, Fig. 2).

:mod:`~qsave.annotate.store` keeps the project (users, videos, assignments, ratings, sessions)
in SQL through SQLAlchemy Core; :mod:`~qsave.annotate.export` writes the tables that
``qsave data mos|screen|records`` read. Nothing heavy is imported here: the store needs the
``annotate`` extra (sqlalchemy, argon2-cffi).
"""
