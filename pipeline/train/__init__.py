"""Training: one session for every method (`session.run_session`), its loop, and the inputs it reads."""

from pipeline.train.session import run_session

__all__ = ["run_session"]
