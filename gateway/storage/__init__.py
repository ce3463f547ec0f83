"""Where the gateway keeps things, each a ``Protocol`` with its one-machine and its scale-out
implementation side by side: registered faces and result ids (``faces``: SQLite / Redis) and
job media (``media``: a local folder / an S3 bucket)."""
