"""``python -m ccpipe``: the same as the ``ccpipe`` command."""

from ccpipe.pipeline.cli.main import run

if __name__ == "__main__":
    run()
