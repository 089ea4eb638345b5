"""A ``VideoSource`` wrapper for the frame-bank tests: which records are read."""


class CountingSource:
  """Reads through ``source`` and records each record index read in
  ``reads``; ``metadata`` replaces the source's (e.g. a build without
  ``frame_rows``)."""

  def __init__(self, source, metadata=None):
    self.source, self.reads = source, []
    if metadata is not None:
      self.metadata = metadata

  def __getattr__(self, name):
    return getattr(self.source, name)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.reads.append(i)
    return self.source[i]
