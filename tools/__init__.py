"""Project tools: model download, stand-in generation, repository build, server control, demo, bench."""
